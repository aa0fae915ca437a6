"""Kaggle-style answer files (``ImageId,Label``) and scoring predictions against them.

Kaggle keeps the answers to ``test.csv`` secret; ``mnist-onnx data`` writes
them beside its own ``test.csv`` as ``test_labels.csv`` in the submission's
format: a header ``ImageId,Label``, then one row per image, ``ImageId``
1-based.  :func:`read_answers` reads such a file with the same care as the
pixel reader (errors name the file, line and column), and :func:`evaluate`
turns predictions and answers into the :class:`Evaluation` a labelled CSV
gives.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CsvFormatError, MnistOnnxError
from .results import Evaluation

__all__ = ["ANSWER_COLUMNS", "read_answers", "evaluate"]

#: The header of an answer file, as in a Kaggle submission.
ANSWER_COLUMNS = ("ImageId", "Label")
_SHOWN_CHARS = 40


def _shown(text: str) -> str:
    return repr(text) if len(text) <= _SHOWN_CHARS else repr(text[:_SHOWN_CHARS]) + "..."


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CsvFormatError(str(path), None, None, "no such file") from None
    except IsADirectoryError:
        raise CsvFormatError(str(path), None, None, "is a directory, expected an ImageId,Label CSV file") from None
    except OSError as exc:
        raise CsvFormatError(str(path), None, None, f"cannot read ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise CsvFormatError(str(path), None, None, f"damaged or truncated gzip data ({exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CsvFormatError(str(path), line, None, "is not UTF-8 text") from None


def read_answers(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Kaggle-style answer file: ``ImageId,Label`` rows, ``ImageId`` 1..N in any order.

    Args:
        path: The CSV (plain or gzip), e.g. the ``test_labels.csv`` that
            ``mnist-onnx data`` writes.

    Returns:
        int64 labels, shape (N,): element ``i`` is the answer for ``ImageId`` ``i + 1``.

    Raises:
        CsvFormatError: If the file is missing or unreadable, its header is not
            ``ImageId,Label``, a cell is not an integer in range, or the ImageIds
            are not exactly 1..N (a duplicate or a gap is named by its line).
    """
    p = Path(path)
    rows = csv.reader(io.StringIO(_text(p)))
    header = [name.strip() for name in next(rows, [])]
    if tuple(header) != ANSWER_COLUMNS:
        shown = _shown(",".join(header)) if header else "an empty file"
        raise CsvFormatError(str(p), 1, None, f"expected the header 'ImageId,Label', got {shown}")
    ids: list[int] = []
    labels: list[int] = []
    lines: dict[int, int] = {}
    for line_no, fields in enumerate(rows, start=2):
        if not fields or all(not field.strip() for field in fields):
            continue
        if len(fields) != 2:
            raise CsvFormatError(str(p), line_no, None, f"expected 2 fields (ImageId,Label), got {len(fields)}")
        image_id = _integer(p, line_no, "ImageId", fields[0], low=1)
        label = _integer(p, line_no, "Label", fields[1], low=0, high=9)
        if image_id in lines:
            raise CsvFormatError(
                str(p), line_no, "ImageId", f"ImageId {image_id} appears twice (first on line {lines[image_id]})"
            )
        lines[image_id] = line_no
        ids.append(image_id)
        labels.append(label)
    if not ids:
        raise CsvFormatError(str(p), None, None, "has a header but no answers")
    order = np.argsort(np.asarray(ids, dtype=np.int64))
    sorted_ids = np.asarray(ids, dtype=np.int64)[order]
    gaps = np.flatnonzero(sorted_ids != np.arange(1, len(ids) + 1))
    if gaps.size:
        missing = int(gaps[0]) + 1
        raise CsvFormatError(
            str(p), None, "ImageId", f"expected ImageIds 1..{len(ids):,}, but ImageId {missing:,} is missing"
        )
    return np.asarray(labels, dtype=np.int64)[order]


def _integer(path: Path, line: int, column: str, text: str, *, low: int, high: int | None = None) -> int:
    cell = text.strip()
    # ASCII digits only: int() would also take '1_0', '+5' and other scripts' digits.
    value = int(cell) if cell.isascii() and cell.isdigit() else None
    if value is None or value < low or (high is not None and value > high):
        wanted = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"
        raise CsvFormatError(str(path), line, column, f"expected {wanted}, got {_shown(text)}")
    return value


def evaluate(predicted: Sequence[Any] | np.ndarray, answers: np.ndarray, class_labels: Sequence[Any]) -> Evaluation:
    """Score predicted labels against answers: accuracy and confusion matrix.

    Args:
        predicted: The predicted labels, shape (N,), values from ``class_labels``
            (a prediction frame's ``Label`` column).
        answers: The true digits, int64 shape (N,), as :func:`read_answers` returns.
        class_labels: The model's class labels, in output-column order; they
            must include the digits 0-9.

    Returns:
        The accuracy and confusion matrix, as for a CSV with a label column.

    Raises:
        MnistOnnxError: If the lengths differ or the model's labels do not include every digit.
    """
    labels = tuple(class_labels)
    truth = np.asarray(answers, dtype=np.int64)
    guessed = np.asarray(predicted)
    if len(guessed) != len(truth):
        raise MnistOnnxError(
            f"expected one answer per prediction, got {len(truth):,} answers for {len(guessed):,} predictions"
        )
    column = {label: index for index, label in enumerate(labels)}
    missing = [digit for digit in range(10) if digit not in column]
    if missing:
        raise MnistOnnxError(f"cannot score digits against a model whose labels lack {missing[0]}: {list(labels)}")
    truth_columns = np.array([column[digit] for digit in range(10)])[truth]
    guessed_columns = np.array([column[label] for label in guessed.tolist()], dtype=np.int64)
    classes = len(labels)
    confusion = (
        np.bincount(truth_columns * classes + guessed_columns, minlength=classes * classes)
        .reshape(classes, classes)
        .astype(np.int64)
    )
    correct = int(np.trace(confusion))
    return Evaluation(
        rows=len(truth), correct=correct, accuracy=correct / len(truth), labels=labels, confusion=confusion
    )
