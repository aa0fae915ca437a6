"""Predicting a Kaggle CSV with a :class:`~.predictor.DigitClassifier`: read, score, collect.

Kept apart from :mod:`.predictor` so the classifier stays about the session and
in-memory arrays.  Phase 1 (:func:`score_csv`) parses the file and predicts it
in batches, in file order; phase 2 (:func:`~.results.collect_scored`) scores the
labels, writes the output and assembles the frame.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import MnistOnnxError
from ._pipeline import ordered_map, prefetched
from ._types import PathLike
from .contract_check import inverted_message
from .defaults import BLOCKS_IN_FLIGHT_PER_WORKER, CSV_BLOCK_ROWS
from .kaggle_csv import DigitBatch, KaggleCsvInfo, inspect_kaggle_csv, iter_kaggle_csv, parse_block, raw_blocks
from .results import RunInfo, Scored, collect_scored, prediction_frame

if TYPE_CHECKING:
    from .predictor import DigitClassifier

__all__ = ["predict_csv", "score_csv"]


def predict_csv(
    classifier: DigitClassifier,
    path: PathLike,
    *,
    output: PathLike | None,
    proba: bool,
    batch_size: int | None,
    chunk_rows: int,
    overlap_reading: bool,
    progress: Callable[[int], None] | None,
    invert: bool,
) -> pd.DataFrame:
    """Predict every row of a Kaggle CSV with ``classifier``: see :meth:`.predictor.DigitClassifier.predict_csv`.

    Raises:
        CsvFormatError: If the CSV is malformed (names the file, line and column).
        MnistOnnxError: If ``chunk_rows`` is below 1 or ``output`` cannot be written.
    """
    size = classifier._batch_size(batch_size)
    started = time.perf_counter()
    if chunk_rows < 1:
        raise MnistOnnxError(f"expected chunk_rows to be at least 1, got {chunk_rows}")
    info = inspect_kaggle_csv(path)  # checks the header now
    if invert:
        info = dataclasses.replace(info, invert=True)
    labels = classifier.class_labels
    scored = score_csv(classifier, info, size, chunk_rows=chunk_rows, overlap_reading=overlap_reading)
    totals = collect_scored(scored, info, labels, output=output, proba=proba, progress=progress)
    frame = prediction_frame(0, totals.predicted, totals.probabilities, labels)
    run = RunInfo(
        model=classifier.model_name,
        providers=classifier.providers,
        rows=totals.rows,
        seconds=time.perf_counter() - started,
        evaluation=totals.evaluation,
    )
    frame.attrs.update(run.as_attrs())
    frame.attrs["provider"] = classifier.provider_for(None)  # a CSV is not routed by call size
    found = inverted_message(totals.bright_borders, totals.rows, str(path))
    frame.attrs["warnings"] = classifier.warnings + ([found] if found else [])
    frame.attrs["notes"] = [f"{path}: {info.note}"] if info.note else []
    return frame


def score_csv(
    classifier: DigitClassifier, info: KaggleCsvInfo, batch_size: int, *, chunk_rows: int, overlap_reading: bool
) -> Iterator[Scored]:
    """Phase 1: parsed batches of the file with their probabilities, in file order."""
    if overlap_reading and classifier._workers > 1:
        return _blocks_in_parallel(classifier, info, min(chunk_rows, CSV_BLOCK_ROWS), batch_size)
    chunks: Iterable[DigitBatch] = iter_kaggle_csv(info, chunk_rows=chunk_rows)
    if overlap_reading:
        chunks = prefetched(chunks)
    return ((batch, classifier._probabilities(batch.images, batch_size)) for batch in chunks)


def _blocks_in_parallel(
    classifier: DigitClassifier, info: KaggleCsvInfo, block_rows: int, batch_size: int
) -> Iterator[Scored]:
    """Parse and predict blocks of the CSV on the classifier's worker threads; yield them in file order.

    The calling thread only reads raw bytes and hands out blocks, at most
    ``BLOCKS_IN_FLIGHT_PER_WORKER`` a worker ahead, so memory stays bounded.
    (Tried on CUDA too, with worker threads that only parse: on an H100
    machine no faster than one reader thread, so CUDA keeps that.)
    """
    session, executor = classifier._parallel()

    def task(data: bytes) -> Scored:
        batch = parse_block(info, data)
        return batch, classifier._in_order(batch.images, batch_size, session)

    in_flight = BLOCKS_IN_FLIGHT_PER_WORKER * classifier._workers
    return ordered_map(executor, task, raw_blocks(info, block_rows), in_flight=in_flight)
