"""The rows of a Ray run, without Ray: the blocks the read tasks make, and their way back in input order.

Kept apart from :mod:`.ray_engine` (which starts Ray and runs the pipeline)
so that module stays about Ray; everything here works on plain numpy arrays.
A block holds a file's pixel columns (``pixel0`` .. ``pixel783``) beside the
columns below, which pass through the actors untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CsvFormatError
from .kaggle_csv import PIXEL_COLUMNS
from .ray_plan import per_file_output
from .results import NO_LABEL, Evaluation, LabelScorer, write_csv

__all__ = [
    "FILE_INDEX",
    "ROW",
    "TRUTH",
    "ERROR",
    "row_block",
    "FileResults",
    "split_by_file",
    "write_per_file",
    "evaluate",
]

# Columns the reader adds beside the pixels; they pass through the predictor.
FILE_INDEX, ROW, TRUTH, ERROR = "file_index", "row", "label", "error"


def row_block(
    file_index: int, first_row: int, pixels: np.ndarray, labels: np.ndarray | None, error: str
) -> dict[str, np.ndarray]:
    """One Ray block: ``pixels`` (uint8, (N, 784)) as pixel columns, with file index, row numbers, labels and error."""
    rows = len(pixels)
    # Column-major, so each pixel column is one contiguous run for Arrow to copy.
    by_column = np.asfortranarray(pixels)
    block: dict[str, np.ndarray] = {
        FILE_INDEX: np.full(rows, file_index, dtype=np.int32),
        ROW: np.arange(first_row, first_row + rows, dtype=np.int64),
        TRUTH: (np.full(rows, NO_LABEL, dtype=np.int16) if labels is None else labels.astype(np.int16)),
        ERROR: np.full(rows, error, dtype=object),
    }
    block.update({name: by_column[:, j] for j, name in enumerate(PIXEL_COLUMNS)})
    return block


def write_per_file(results: FileResults, out_dir: Path | None) -> list[Path]:
    """Write each good file's predictions to ``out_dir`` (when given); return what was written."""
    written: list[Path] = []
    if out_dir is not None:
        for path, frame in results.per_file.items():
            destination = per_file_output(path, out_dir)
            write_csv(frame, destination)
            written.append(destination)
    return written


@dataclass(frozen=True)
class FileResults:
    """Ray's rows put back in input order and split by file.

    Attributes:
        errors: The error of each bad file, in input order.
        per_file: The predictions of each good file in row order (``ImageId`` 1-based).
        truth: The label column of the good files' rows in input order (:data:`NO_LABEL` where a file has none).
    """

    errors: list[CsvFormatError]
    per_file: dict[Path, pd.DataFrame]
    truth: np.ndarray


def split_by_file(files: list[Path], columns: dict[str, np.ndarray]) -> FileResults:
    """Put Ray's rows back in input order and split them by file."""
    # Ray returns blocks in whatever order the workers finish them.
    order = np.lexsort((columns[ROW], columns[FILE_INDEX]))
    file_index = columns[FILE_INDEX][order]
    bounds = np.searchsorted(file_index, np.arange(len(files) + 1))
    failed = {int(columns[FILE_INDEX][j]): json.loads(columns[ERROR][j]) for j in np.flatnonzero(columns[ROW] < 0)}
    outputs = [name for name in columns if name not in (FILE_INDEX, ROW, TRUTH, ERROR)]
    errors: list[CsvFormatError] = []
    per_file: dict[Path, pd.DataFrame] = {}
    kept: list[np.ndarray] = []
    for i, path in enumerate(files):
        if i in failed:
            errors.append(CsvFormatError(str(path), failed[i]["line"], failed[i]["column"], failed[i]["problem"]))
            continue
        rows = order[bounds[i] : bounds[i + 1]]
        if not np.array_equal(columns[ROW][rows], np.arange(len(rows))):
            raise RuntimeError(f"{path}: Ray returned rows out of sequence")  # a bug, not bad input
        frame = {"ImageId": np.arange(1, len(rows) + 1, dtype=np.int64)}
        frame.update({name: columns[name][rows] for name in outputs})
        per_file[path] = pd.DataFrame(frame)
        kept.append(rows)
    truth = columns[TRUTH][np.concatenate(kept)] if kept else np.empty(0, np.int16)
    return FileResults(errors=errors, per_file=per_file, truth=truth)


def evaluate(truth: np.ndarray, predicted: np.ndarray, class_labels: tuple[Any, ...]) -> Evaluation | None:
    """Accuracy and confusion matrix when every row has a label (as ``DigitClassifier.predict_csv`` scores).

    Args:
        truth: The files' labels (int16, :data:`NO_LABEL` where none).
        predicted: The predicted labels (values of ``class_labels``).
        class_labels: The model's class labels.
    """
    column = {label: j for j, label in enumerate(class_labels)}
    indices = np.fromiter((column[label] for label in predicted.tolist()), dtype=np.int64, count=len(predicted))
    scorer = LabelScorer(class_labels)
    scorer.add(truth, indices)
    return scorer.evaluation()
