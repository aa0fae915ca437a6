"""Score many Kaggle CSVs, or very large ones, on a Ray cluster with Ray Data.

Two pieces:

* :class:`DigitBatchPredictor`, a callable class for ``Dataset.map_batches``
  run as an actor pool: each actor builds one onnxruntime session when it
  starts and reuses it for every batch.  It takes Kaggle pixel columns
  (``pixel0`` .. ``pixel783``) and adds ``Label`` (and, on request, ``p0`` ..
  ``p9`` and ``confidence``); every other column passes through.  It imports
  no Ray, so it also works on a plain DataFrame.
* :func:`predict_csv_files`, which reads one or many CSVs (paths or globs)
  with the package's own reader inside Ray tasks, scores them on the actor
  pool, and writes one Kaggle submission (ImageIds in input order across the
  files) and/or one output per file.  Its results are those of
  :func:`~mnist_onnx.runtime.predictor.predict_csv` on the same files: the
  same labels, ImageIds and order.

Ray is an optional extra (``pip install 'mnist-onnx[ray]'``), imported only
when :func:`predict_csv_files` runs.

Why the package's reader and not ``ray.data.read_csv``: pyarrow infers the
pixel columns as int64 (8 bytes a pixel instead of 1), gives no row numbers
(the input order must be rebuilt after a parallel run), and its errors name
neither the line nor the column the way :class:`~mnist_onnx.errors.CsvFormatError`
does.  Each file is read by one Ray task, streamed in ``chunk_rows`` blocks.

A malformed file does not stop the others: its read task turns the
:class:`CsvFormatError` into one marker row, the other files are scored and
their per-file outputs written, and then :class:`CsvFilesError` is raised;
the combined submission, which would be incomplete, is not written.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._extras import require
from ..errors import CsvFilesError, CsvFormatError, MnistOnnxError
from ._ray_rows import FILE_INDEX, evaluate, row_block, split_by_file, write_per_file
from ._types import ModelInput, PathLike, Precision, Providers, check_precision
from .kaggle_csv import DEFAULT_CHUNK_ROWS, PIXEL_COLUMNS, iter_kaggle_csv
from .model_source import load_model
from .predictor import DigitClassifier
from .ray_plan import ResourcePlan, checked_destinations, expand_csv_paths, plan_resources
from .results import RunInfo, probability_columns, write_csv

__all__ = [
    "DigitBatchPredictor",
    "CsvFilesError",  # defined in mnist_onnx.errors; importable from here as before
    "ResourcePlan",
    "plan_resources",
    "expand_csv_paths",
    "predict_csv_files",
]

_PIXELS = frozenset(PIXEL_COLUMNS)


class DigitBatchPredictor:
    """A ``map_batches`` callable that adds the predicted ``Label`` to Kaggle pixel columns.

    Ray Data builds one instance per actor, so the onnxruntime session is
    created once per actor and reused for every batch::

        ds.map_batches(DigitBatchPredictor, fn_constructor_kwargs={"proba": True},
                       batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=4))

    Args:
        model: As for :class:`~mnist_onnx.runtime.predictor.DigitClassifier`;
            pass the model's bytes, not a path, when the workers run on other
            machines.
        providers: ``"auto"``, ``"cpu"``, ``"cuda"`` or onnxruntime provider names.
        threads: onnxruntime intra-op threads per actor.
        precision: ``"fp32"`` or ``"int8"``.
        batch_size: Images per onnxruntime call (a Ray batch may hold many);
            None uses the default of the provider in use (16 on the CPU, 1,024 on CUDA).
        proba: Also add ``p<label>`` for each class and ``confidence``.
        pixel_scale: The model's input scale, as for :class:`~mnist_onnx.runtime.predictor.DigitClassifier`.
        normalize: The model's ``(mean, std)``, as for :class:`~mnist_onnx.runtime.predictor.DigitClassifier`.
        output: The model output holding the class scores, as for
            :class:`~mnist_onnx.runtime.predictor.DigitClassifier`.

    Raises:
        ModelError: If the model cannot be used.
        ProviderError: If a requested provider is not available on the worker.
    """

    def __init__(
        self,
        model: ModelInput = None,
        *,
        providers: Providers = "auto",
        threads: int | None = None,
        precision: Precision | None = None,
        batch_size: int | None = None,
        proba: bool = False,
        pixel_scale: float | None = None,
        normalize: tuple[float, float] | None = None,
        output: str | None = None,
    ) -> None:
        self.classifier = DigitClassifier(
            model,
            providers=providers,
            threads=threads,
            precision=precision,
            batch_size=batch_size,
            pixel_scale=pixel_scale,
            normalize=normalize,
            output=output,
        )
        self.proba = proba
        self._labels = np.asarray(self.classifier.class_labels)

    def __call__(self, batch: dict[str, np.ndarray] | pd.DataFrame) -> dict[str, np.ndarray] | pd.DataFrame:
        """Predict one batch (``batch_format="numpy"`` or ``"pandas"``).

        Returns:
            The batch without its pixel columns, plus ``Label`` (and the
            probability columns with ``proba``), in the batch's own format.

        Raises:
            MnistOnnxError: If a pixel column is missing or holds a value that
                is not an integer 0-255.
        """
        if isinstance(batch, pd.DataFrame):
            return pd.DataFrame(self._predict({name: batch[name].to_numpy() for name in batch.columns}))
        return self._predict(batch)

    def _predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = _pixel_matrix(columns)
        if len(pixels):
            probabilities = self.classifier.predict_proba(pixels)
        else:  # a filter upstream can leave a block empty
            probabilities = np.empty((0, len(self._labels)), dtype=np.float32)
        out = {name: values for name, values in columns.items() if name not in _PIXELS}
        out["Label"] = self._labels[probabilities.argmax(axis=1)]
        if self.proba:
            out.update(probability_columns(probabilities, self.classifier.class_labels))
        return out


def _pixel_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The 784 pixel columns as one uint8 (N, 784) array, checked."""
    missing = [name for name in PIXEL_COLUMNS if name not in columns]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise MnistOnnxError(f"expected Kaggle pixel columns pixel0..pixel783, missing {missing[0]!r}{more}")
    rows = len(columns[PIXEL_COLUMNS[0]])
    pixels = np.empty((rows, len(PIXEL_COLUMNS)), dtype=np.uint8)
    for j, name in enumerate(PIXEL_COLUMNS):
        values = np.asarray(columns[name])
        if values.dtype != np.uint8:
            # ray.data.read_csv and pandas give int64 (or float64 when a cell is empty).
            numeric = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
            bad = (
                np.arange(rows)
                if not numeric
                else np.flatnonzero(~((values >= 0) & (values <= 255) & (values == np.floor(values))))
            )
            if len(bad):
                value = values[bad[0]]
                raise MnistOnnxError(
                    f"column {name}, row {int(bad[0])} of the batch: expected an integer "
                    f"pixel 0-255, got {value.item() if isinstance(value, np.generic) else value!r}"
                )
        pixels[:, j] = values
    return pixels


# -- the Ray pipeline ----------------------------------------------------------


def _read_files(batch: dict[str, np.ndarray], *, chunk_rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray task: read each listed file in blocks of ``chunk_rows`` rows, with file index and row numbers.

    A malformed file ends with one marker row whose ``error`` column holds the
    :class:`CsvFormatError` as JSON; rows read before the error are dropped by the driver.
    """
    for file_index, path in zip(batch[FILE_INDEX], batch["path"], strict=True):
        try:
            for chunk in iter_kaggle_csv(path, chunk_rows=chunk_rows):
                yield row_block(
                    int(file_index), chunk.first_row, chunk.images.reshape(len(chunk), -1), chunk.labels, ""
                )
        except CsvFormatError as exc:
            problem = json.dumps({"line": exc.line, "column": exc.column, "problem": exc.problem})
            yield row_block(int(file_index), -1, np.zeros((1, len(PIXEL_COLUMNS)), np.uint8), None, problem)


def predict_csv_files(
    inputs: PathLike | Sequence[PathLike],
    model: ModelInput = None,
    *,
    output: PathLike | None = None,
    output_dir: PathLike | None = None,
    proba: bool = False,
    providers: Providers = "auto",
    threads: int | None = None,
    precision: Precision | None = None,
    batch_size: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    ray_init_options: dict[str, Any] | None = None,
    pixel_scale: float | None = None,
    normalize: tuple[float, float] | None = None,
    output_name: str | None = None,
) -> pd.DataFrame:
    """Predict every row of one or many Kaggle CSVs with a pool of Ray actors.

    Uses the Ray connection already open in this process if there is one;
    else joins the cluster at ``address``, or starts a local Ray when
    ``address`` is None (and shuts down what it started or joined at the end).
    On a cluster, every node must see the input files at the same paths and
    have mnist-onnx installed; the outputs are written by this process.

    Args:
        inputs: CSV paths and glob patterns (patterns expand in sorted order),
            train or test format, plain or gzipped.
        model: None for the bundled model of ``precision``, a path, or the
            model's bytes; it is sent to the workers as bytes.
        output: Write one CSV for all files here, atomically: a Kaggle
            submission (``ImageId,Label``, ImageIds 1..N across the files in
            input order) unless ``proba``.  Not written if any file is bad.
        output_dir: Write each file's predictions to
            ``output_dir/<name>.predictions.csv`` (ImageIds 1-based per file),
            each atomically; a bad file's output is not written, the others are.
        proba: Add ``p<label>`` and ``confidence`` columns.
        providers: onnxruntime providers on the workers (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
        threads: onnxruntime threads per worker (default: its whole CPUs, at least 1).
        precision: ``"fp32"`` or ``"int8"``: which bundled model.
        batch_size: Images per onnxruntime call; None uses the default of the
            workers' provider (16 on the CPU, 1,024 on CUDA).
        chunk_rows: Rows per Ray block (a file is read in blocks of this many rows).
        workers: Actors in the pool (default: see :func:`plan_resources`).
        gpus_per_worker: GPUs each actor asks Ray for.
        address: A Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).
        ray_init_options: More keyword arguments for ``ray.init`` when this call starts Ray.
        pixel_scale: The model's input scale, as for :class:`~mnist_onnx.runtime.predictor.DigitClassifier`.
        normalize: The model's ``(mean, std)``, as for :class:`~mnist_onnx.runtime.predictor.DigitClassifier`.
        output_name: The model output holding the class scores (``output=`` of
            :class:`~mnist_onnx.runtime.predictor.DigitClassifier`).

    Warns:
        ContractWarning: As :class:`~mnist_onnx.runtime.predictor.DigitClassifier`
            does when the model looks fed in the wrong input convention.

    Returns:
        The predictions of all files as one DataFrame, as
        :func:`~mnist_onnx.runtime.predictor.predict_csv` returns them for the
        files concatenated, with ``attrs`` ``model``, ``providers`` (a
        description of the pool), ``rows``, ``seconds``, ``images_per_second``,
        ``evaluation`` (when every file has a label column), ``files`` (each
        path with its row count) and ``plan`` (the :class:`ResourcePlan`).

    Raises:
        CsvFilesError: If any file is malformed (after the others were scored and written).
        ModelError: If the model cannot be used.
        MnistOnnxError: For bad arguments, missing output directories, or a
            cluster that cannot hold the requested workers.
        MissingExtraError: If Ray is not installed.
    """
    started_at = time.perf_counter()
    files = expand_csv_paths(inputs)
    out_dir = checked_destinations(files, output, output_dir)
    precision = check_precision(precision)
    # The workers get the model's bytes, so they need not see the same file system.
    source = load_model(model, precision=precision)
    settings = {
        "providers": providers,
        "threads": threads,
        "precision": precision,
        "batch_size": batch_size,
        "pixel_scale": pixel_scale,
        "normalize": normalize,
        "output": output_name,
    }
    pool = _score_on_ray(
        files,
        None if model is None else source.data,
        settings,
        chunk_rows=chunk_rows,
        proba=proba,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        address=address,
        ray_init_options=ray_init_options,
    )
    results = split_by_file(files, pool.columns)
    written = write_per_file(results, out_dir)
    if results.errors:
        raise CsvFilesError(results.errors, written, scored=len(results.per_file))

    combined = pd.concat(list(results.per_file.values()), ignore_index=True)
    combined["ImageId"] = np.arange(1, len(combined) + 1, dtype=np.int64)
    if output is not None:
        write_csv(combined, output)
    run = RunInfo(
        model=source.name,
        providers=pool.providers,
        rows=len(combined),
        seconds=time.perf_counter() - started_at,
        evaluation=evaluate(results.truth, combined["Label"].to_numpy(), pool.class_labels),
    )
    combined.attrs.update(run.as_attrs())
    combined.attrs.update(
        {"files": [(path, len(frame)) for path, frame in results.per_file.items()], "plan": pool.plan}
    )
    return combined


@dataclass(frozen=True)
class _PoolRun:
    """What the Ray pipeline gave back.

    Attributes:
        columns: Every column but the pixels, in the order Ray returned the blocks.
        class_labels: The model's class labels, as the workers read them.
        providers: The workers' providers, the first one described with the pool's size.
        plan: The resources asked for.
    """

    columns: dict[str, np.ndarray]
    class_labels: tuple[Any, ...]
    providers: list[str]
    plan: ResourcePlan


def _score_on_ray(
    files: list[Path],
    model: bytes | None,
    settings: dict[str, Any],
    *,
    chunk_rows: int,
    proba: bool,
    workers: int | None,
    gpus_per_worker: float,
    address: str | None,
    ray_init_options: dict[str, Any] | None,
) -> _PoolRun:
    """Start or join Ray, check the model on a worker, run the pipeline; shut down what was started."""
    ray = require("ray", "ray")
    require("ray.data", "ray")
    owned = not ray.is_initialized()
    if owned:
        options = {"include_dashboard": False, **(ray_init_options or {})}
        ray.init(address=address or "local", **options)
    try:
        resources = ray.cluster_resources()
        plan = plan_resources(
            resources.get("CPU", 0.0),
            resources.get("GPU", 0.0),
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            threads=settings["threads"],
        )
        settings = {**settings, "threads": plan.threads}
        # One task, placed like an actor, builds the classifier first, so a bad
        # model or a provider the workers lack fails before the pipeline starts
        # (Ray keeps only the text of an error raised in an actor's constructor).
        check = ray.remote(num_cpus=plan.actor_cpus, num_gpus=plan.gpus_per_worker)(_describe_classifier)
        try:
            class_labels, used_providers, found = ray.get(check.remote(model, **settings))
            for warning in found:  # the load-time contract check ran on the worker: say it here
                warnings.warn(warning, stacklevel=3)
            columns = _collect(_build_dataset(ray, files, plan, model, chunk_rows=chunk_rows, proba=proba, **settings))
        except Exception as exc:
            # Our own errors reach us wrapped in Ray's exceptions: raise the original.
            ours = _our_error(exc)
            if ours is None:
                raise
            raise ours from None
    finally:
        if owned:
            ray.shutdown()
    pool = (
        f"{plan.workers} Ray workers × {plan.gpus_per_worker:g} GPU"
        if plan.gpus_per_worker
        else f"{plan.workers} Ray workers × {plan.actor_cpus:g} CPU"
    )
    return _PoolRun(
        columns=columns,
        class_labels=class_labels,
        providers=[f"{used_providers[0]} ({pool})", *used_providers[1:]],
        plan=plan,
    )


def _build_dataset(
    ray: Any,
    files: list[Path],
    plan: ResourcePlan,
    model: bytes | None,
    *,
    chunk_rows: int,
    proba: bool,
    **settings: Any,
) -> Any:
    """The Ray Dataset that reads the files in tasks and scores them on the actor pool."""
    items = [{FILE_INDEX: i, "path": str(path)} for i, path in enumerate(files)]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    # Reading is a task stage of its own, not fused into the actors (see plan_resources).
    dataset = dataset.map_batches(
        _read_files, fn_kwargs={"chunk_rows": chunk_rows}, batch_size=1, batch_format="numpy", num_cpus=plan.read_cpus
    )
    dataset = dataset.map_batches(
        DigitBatchPredictor,
        fn_constructor_kwargs={"model": model, "proba": proba, **settings},
        batch_size=None,  # one Ray batch per block the reader made: no re-batching copies
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.actor_cpus,
        num_gpus=plan.gpus_per_worker or None,
    )
    return dataset


def _collect(dataset: Any) -> dict[str, np.ndarray]:
    """Every column but the pixels, gathered on the driver, in the order Ray returns them."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for name, values in batch.items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


def _describe_classifier(
    model: bytes | None, **settings: Any
) -> tuple[tuple[Any, ...], list[str], list[Warning | str]]:
    """Ray task: build the classifier as an actor will; return its class labels, providers and warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = DigitClassifier(model, **settings)
    return classifier.class_labels, classifier.providers, [warning.message for warning in caught]


def _our_error(exc: BaseException) -> MnistOnnxError | None:
    """The :class:`MnistOnnxError` that a Ray exception wraps, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError keeps the original here
        if isinstance(cause, BaseException):
            current = cause
        elif isinstance(current, MnistOnnxError):
            return current
        else:
            current = current.__cause__ or current.__context__
    return None
