"""What a prediction run gives back: prediction frames, the evaluation, and the one CSV writer.

Every path that writes predictions (``DigitClassifier.predict_csv``, the Ray
engine's combined and per-file outputs) writes through :class:`CsvSink`, so
the format (``ImageId,Label[,p<label>...,confidence]``, ``\\n`` line ends,
probabilities as ``%.6g``) and the atomic replace are the same everywhere.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from .._fileio import atomic_path
from ..errors import CsvFormatError
from ._types import PathLike
from .contract import label_values
from .contract_check import count_bright_borders
from .kaggle_csv import DigitBatch, KaggleCsvInfo

__all__ = [
    "Evaluation",
    "LabelScorer",
    "RunInfo",
    "prediction_frame",
    "CsvSink",
    "csv_sink",
    "write_csv",
    "CsvTotals",
    "Scored",
    "collect_scored",
]

#: How probabilities are written: 6 significant digits, enough to tell 0.999999 from 1.
FLOAT_FORMAT = "%.6g"
#: The label a row without one gets in integer label arrays.
NO_LABEL = -1


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Accuracy of predictions on a CSV that carries a ``label`` column.

    Attributes:
        rows: Images scored.
        correct: Images whose predicted label equals the file's label.
        accuracy: ``correct / rows``.
        labels: The class labels, in the order of the confusion matrix.
        confusion: int64 counts, shape (classes, classes): row = true label, column = predicted.
    """

    rows: int
    correct: int
    accuracy: float
    labels: tuple[Any, ...]
    confusion: np.ndarray = field(repr=False)

    def confusion_frame(self) -> pd.DataFrame:
        """The confusion matrix as a DataFrame (index ``true``, columns ``predicted``)."""
        return pd.DataFrame(
            self.confusion, index=pd.Index(self.labels, name="true"), columns=pd.Index(self.labels, name="predicted")
        )


class LabelScorer:
    """Counts a confusion matrix batch by batch, for any class labels that include the digits 0-9.

    A Kaggle file's labels are the digits 0-9; each is scored against the
    model's output column of that digit.  A model whose labels lack a digit
    cannot be scored (:meth:`evaluation` gives None), nor can a file without labels.

    Args:
        class_labels: The model's class labels, in output-column order.
    """

    def __init__(self, class_labels: tuple[Any, ...]) -> None:
        self.labels = class_labels
        self._digit_column = np.array([class_labels.index(d) if d in class_labels else -1 for d in range(10)])
        self._can_score = bool((self._digit_column >= 0).all())
        self._confusion = np.zeros((len(class_labels), len(class_labels)), dtype=np.int64)
        self._rows = 0
        self._missing = False

    def add(self, truth: np.ndarray | None, predicted: np.ndarray) -> None:
        """Count one batch.

        Args:
            truth: The file's labels, digits 0-9 (int), or None / :data:`NO_LABEL` where it has none.
            predicted: The predicted output-column indices (int), same length.
        """
        if truth is None or not self._can_score or (truth == NO_LABEL).any():
            self._missing = True
            return
        classes = len(self.labels)
        flat = self._digit_column[truth.astype(np.int64)] * classes + predicted.astype(np.int64)
        self._confusion += np.bincount(flat, minlength=classes * classes).reshape(classes, classes)
        self._rows += len(truth)

    def evaluation(self) -> Evaluation | None:
        """The accuracy and confusion matrix, or None when some row had no label or the labels do not fit."""
        if self._missing or self._rows == 0:
            return None
        correct = int(np.trace(self._confusion))
        return Evaluation(
            rows=self._rows,
            correct=correct,
            accuracy=correct / self._rows,
            labels=self.labels,
            confusion=self._confusion.copy(),
        )


@dataclass(frozen=True)
class RunInfo:
    """What a prediction run records in the returned frame's ``attrs``.

    Attributes:
        model: Where the model came from.
        providers: The execution providers really used (or a description of a worker pool).
        rows: Images predicted.
        seconds: Wall time, reading and writing included.
        evaluation: Accuracy and confusion matrix when the input had labels, else None.
    """

    model: str
    providers: list[str]
    rows: int
    seconds: float
    evaluation: Evaluation | None

    def as_attrs(self) -> dict[str, Any]:
        """The public ``attrs`` keys: model, providers, rows, seconds, images_per_second, evaluation."""
        return {
            "model": self.model,
            "providers": self.providers,
            "rows": self.rows,
            "seconds": self.seconds,
            "images_per_second": self.rows / self.seconds if self.seconds > 0 else math.inf,
            "evaluation": self.evaluation,
        }


def prediction_frame(
    first_row: int, predicted: np.ndarray, probabilities: np.ndarray | None, class_labels: tuple[Any, ...]
) -> pd.DataFrame:
    """Predictions as a frame: ``ImageId`` (1-based), ``Label``, and with probabilities ``p<label>``, ``confidence``.

    Args:
        first_row: 0-based index of the first row (its ImageId is ``first_row + 1``).
        predicted: Output-column indices (int), shape (n,).
        probabilities: float32 (n, classes), or None for a submission frame.
        class_labels: The model's class labels.

    >>> prediction_frame(2, np.array([1, 0]), None, (0, 1)).values.tolist()
    [[3, 1], [4, 0]]
    """
    columns: dict[str, Any] = {
        "ImageId": np.arange(first_row + 1, first_row + 1 + len(predicted), dtype=np.int64),
        "Label": label_values(class_labels, predicted),
    }
    if probabilities is not None:
        columns.update(probability_columns(probabilities, class_labels))
    return pd.DataFrame(columns)


def probability_columns(probabilities: np.ndarray, class_labels: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """``p<label>`` for each class and ``confidence`` (the highest probability)."""
    columns = {f"p{label}": probabilities[:, j] for j, label in enumerate(class_labels)}
    columns["confidence"] = probabilities.max(axis=1)
    return columns


class CsvSink:
    """An open prediction CSV: frames written one after another, the header once.

    Made by :func:`csv_sink`, which owns the atomic replace.
    """

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self._header = True

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows (and, the first time, its header)."""
        frame.to_csv(self._handle, header=self._header, index=False, lineterminator="\n", float_format=FLOAT_FORMAT)
        self._header = False


#: gzip level of ``.gz`` outputs: 6 (gzip's own default) packs a submission nearly as small as 9, several times faster.
GZIP_LEVEL = 6


@contextlib.contextmanager
def csv_sink(destination: PathLike) -> Iterator[CsvSink]:
    """Open ``destination`` for streaming predictions; it appears only when the block ends without an error.

    A destination whose name ends in ``.gz`` is written gzip-compressed (the
    gzip header records the name without ``.gz`` and no time stamp, so the same
    predictions give the same bytes).

    Raises:
        MnistOnnxError: If the destination cannot be written (directory
            missing, disk full, permission denied); nothing is left behind.
    """
    with atomic_path(destination) as tmp:
        # OSErrors here name no file or the temporary one: atomic_path reports them against the destination.
        if str(destination).endswith(".gz"):
            with open(tmp, "wb") as raw:
                with (
                    gzip.GzipFile(
                        filename=Path(destination).name, mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw, mtime=0
                    ) as packed,
                    io.TextIOWrapper(packed, encoding="utf-8", newline="") as text,
                ):
                    yield CsvSink(text)
                raw.flush()
                os.fsync(raw.fileno())
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                yield CsvSink(handle)
                handle.flush()
                os.fsync(handle.fileno())


def write_csv(frame: pd.DataFrame, destination: PathLike) -> None:
    """Write a whole prediction frame to ``destination`` atomically (see :func:`csv_sink`)."""
    with csv_sink(destination) as sink:
        sink.write(frame)


#: (a parsed batch, its probabilities float32 (n, classes)), in file order.
Scored = tuple[DigitBatch, np.ndarray]


@dataclass
class CsvTotals:
    """What streaming a CSV through the model gathered."""

    rows: int
    predicted: np.ndarray  # int32 (rows,), output-column indices
    probabilities: np.ndarray | None  # float32 (rows, classes) when asked for
    evaluation: Evaluation | None
    bright_borders: int  # images whose frame is bright (dark-on-light digits)


def collect_scored(
    scored: Iterator[Scored],
    info: KaggleCsvInfo,
    class_labels: tuple[Any, ...],
    *,
    output: PathLike | None,
    proba: bool,
    progress: Callable[[int], None] | None,
) -> CsvTotals:
    """Score scored batches against the file's labels, write ``output`` as they come, gather the predictions.

    Raises:
        CsvFormatError: If the file has a header but no data rows.
        MnistOnnxError: If ``output`` cannot be written (nothing is left there).
    """
    scorer = LabelScorer(class_labels)
    predicted_parts: list[np.ndarray] = []
    proba_parts: list[np.ndarray] = []
    rows = bright = 0
    with contextlib.ExitStack() as stack:
        # Closed on the way out, so no reader thread or block task outlives this call, even on an error.
        stack.callback(getattr(scored, "close", lambda: None))
        sink: CsvSink | None = stack.enter_context(csv_sink(output)) if output is not None else None
        for batch, probabilities in scored:
            if not len(batch):
                continue  # a block of blank lines
            predicted = probabilities.argmax(axis=1)
            predicted_parts.append(predicted.astype(np.int32))
            if proba:
                proba_parts.append(probabilities)
            scorer.add(batch.labels, predicted)
            bright += count_bright_borders(batch.images)
            if sink is not None:
                sink.write(prediction_frame(rows, predicted, probabilities if proba else None, class_labels))
            rows += len(batch)
            if progress is not None:
                progress(rows)
        if rows == 0:
            raise CsvFormatError(str(info.path), None, None, "has a header but no data rows")
    return CsvTotals(
        rows=rows,
        predicted=np.concatenate(predicted_parts),
        probabilities=np.concatenate(proba_parts) if proba else None,
        evaluation=scorer.evaluation(),
        bright_borders=bright,
    )
