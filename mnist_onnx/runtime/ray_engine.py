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

import glob
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from .._extras import require
from .._fileio import atomic_path
from ..errors import CsvFormatError, MnistOnnxError
from .defaults import DEFAULT_BATCH_SIZE
from .kaggle_csv import DEFAULT_CHUNK_ROWS, PIXEL_COLUMNS, iter_kaggle_csv
from .predictor import DigitClassifier, Evaluation
from .session import Providers, load_model

__all__ = [
    "DigitBatchPredictor",
    "CsvFilesError",
    "ResourcePlan",
    "plan_resources",
    "expand_csv_paths",
    "predict_csv_files",
]

_PIXELS = frozenset(PIXEL_COLUMNS)
# Columns the reader adds beside the pixels; they pass through the predictor.
_FILE, _ROW, _TRUTH, _ERROR = "file_index", "row", "label", "error"
_NO_LABEL = -1


class CsvFilesError(MnistOnnxError):
    """Some of the input files are malformed; the others were scored.

    Attributes:
        errors: One :class:`CsvFormatError` per bad file, in input order.
        written: The per-file outputs that were written (the good files').
        scored: How many files were scored.
    """

    def __init__(self, errors: Sequence[CsvFormatError], written: Sequence[Path], scored: int):
        self.errors = tuple(errors)
        self.written = tuple(written)
        self.scored = scored
        total = scored + len(self.errors)
        bad = "; ".join(str(e) for e in self.errors)
        kept = (f"the other {scored} files' predictions were written to their per-file outputs"
                if self.written else f"the other {scored} files were scored (no per-file outputs asked for)")
        super().__init__(f"{len(self.errors)} of {total} input files could not be read: {bad}; "
                         f"{kept}; no combined submission was written")


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
        batch_size: Images per onnxruntime call (a Ray batch may hold many).
        proba: Also add ``p<label>`` for each class and ``confidence``.

    Raises:
        ModelError: If the model cannot be used.
        ProviderError: If a requested provider is not available on the worker.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | None = None,
        *,
        providers: Providers = "auto",
        threads: int | None = None,
        precision: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        proba: bool = False,
    ) -> None:
        self.classifier = DigitClassifier(model, providers=providers, threads=threads,
                                          precision=precision, batch_size=batch_size)
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
            for j, label in enumerate(self.classifier.class_labels):
                out[f"p{label}"] = probabilities[:, j]
            out["confidence"] = probabilities.max(axis=1)
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
            bad = (np.arange(rows) if not numeric else
                   np.flatnonzero(~((values >= 0) & (values <= 255) & (values == np.floor(values)))))
            if len(bad):
                value = values[bad[0]]
                raise MnistOnnxError(f"column {name}, row {int(bad[0])} of the batch: expected an integer "
                                     f"pixel 0-255, got {value.item() if isinstance(value, np.generic) else value!r}")
        pixels[:, j] = values
    return pixels


# -- planning -------------------------------------------------------------------


@dataclass(frozen=True)
class ResourcePlan:
    """What each Ray task and actor asks the scheduler for.

    Attributes:
        workers: Actors in the pool, one onnxruntime session each.
        actor_cpus: CPUs each actor asks for (fractional on small machines).
        read_cpus: CPUs each CSV read task asks for.
        gpus_per_worker: GPUs each actor asks for.
        threads: onnxruntime intra-op threads per actor.
    """

    workers: int
    actor_cpus: float
    read_cpus: float
    gpus_per_worker: float
    threads: int


def plan_resources(cluster_cpus: float, cluster_gpus: float = 0.0, *, workers: int | None = None,
                   gpus_per_worker: float = 0.0, threads: int | None = None) -> ResourcePlan:
    """Size the actors' and read tasks' resource requests so the pipeline always makes progress.

    With every actor asking for a whole CPU, two actors on a 2-CPU Ray never
    both start while a read task holds a CPU, and Ray Data waits forever (seen
    with Ray 2.60 and ``ray.init(num_cpus=2)``).  So one read task and all the
    actors together ask for at most the cluster's CPUs: an actor asks for a
    whole CPU where there are enough, a share of what is left where not.
    Actors ask for more than read tasks, so the two stages stay separate.

    >>> plan_resources(2, workers=2)
    ResourcePlan(workers=2, actor_cpus=0.8, read_cpus=0.4, gpus_per_worker=0.0, threads=1)
    >>> plan_resources(64).workers, plan_resources(64).actor_cpus
    (63, 1.0)

    Args:
        cluster_cpus: CPUs the Ray cluster reports.
        cluster_gpus: GPUs the Ray cluster reports.
        workers: Actors wanted; default one per GPU share with ``gpus_per_worker``,
            else one per CPU but one (which is left for reading).
        gpus_per_worker: GPUs per actor (0 for CPU inference; 0.5 shares a GPU between two).
        threads: onnxruntime threads per actor; default the actor's whole CPUs, at least 1.

    Raises:
        MnistOnnxError: If the cluster has no CPU, or fewer GPUs than the actors ask for.
    """
    if cluster_cpus < 1:
        raise MnistOnnxError(f"the Ray cluster reports {cluster_cpus:g} CPUs, expected at least 1")
    if gpus_per_worker < 0 or (workers is not None and workers < 1):
        raise MnistOnnxError(f"expected workers >= 1 and gpus_per_worker >= 0, "
                             f"got {workers} and {gpus_per_worker:g}")
    if workers is None:
        if gpus_per_worker > 0:
            workers = max(1, math.floor(cluster_gpus / gpus_per_worker + 1e-9))
        else:
            workers = max(1, math.floor(cluster_cpus) - 1)
    if gpus_per_worker > 0 and workers * gpus_per_worker > cluster_gpus + 1e-9:
        raise MnistOnnxError(f"{workers} workers × {gpus_per_worker:g} GPUs need "
                             f"{workers * gpus_per_worker:g} GPUs, the Ray cluster reports {cluster_gpus:g}")
    # A read task parses (about 0.2 s of CPU per 28,000 rows) a tenth of what
    # an actor spends on inference, so it asks for less: half a CPU, or less
    # on a small machine, and always less than an actor.  That difference also
    # keeps Ray Data from fusing reading into the actors (it fuses stages only
    # when their resource requests match); fused, the actor that read a file
    # would score all of it, and one large file would keep the others idle.
    read_cpus = min(0.5, cluster_cpus / (2 * workers + 1))
    actor_cpus = min(1.0, (cluster_cpus - read_cpus) / workers)
    # Ray counts fractional resources in units of 1/10,000; round down so the sum never exceeds the cluster.
    read_cpus, actor_cpus = math.floor(read_cpus * 1e4) / 1e4, math.floor(actor_cpus * 1e4) / 1e4
    return ResourcePlan(workers=workers, actor_cpus=actor_cpus, read_cpus=read_cpus,
                        gpus_per_worker=float(gpus_per_worker),
                        threads=threads if threads is not None else max(1, math.floor(actor_cpus)))


def expand_csv_paths(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Turn paths and glob patterns into the list of files, in the order they are scored.

    Patterns expand in sorted order; the inputs keep the order given.

    Raises:
        MnistOnnxError: If there is no input, a pattern matches nothing, or a
            file comes up twice.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise MnistOnnxError("expected at least one CSV path or glob pattern, got none")
    files: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise MnistOnnxError(f"{text}: no file matches this pattern")
            files.extend(Path(m) for m in matches)
        else:
            files.append(Path(text))
    seen: dict[Path, Path] = {}
    for path in files:
        key = Path(os.path.abspath(path))
        if key in seen:
            raise MnistOnnxError(f"{path}: given twice (as {seen[key]} too); each file is scored once")
        seen[key] = path
    return files


def per_file_output(path: Path, output_dir: Path) -> Path:
    """Where the predictions for ``path`` go: ``output_dir/<name>.predictions.csv``.

    >>> per_file_output(Path("data/part-3.csv.gz"), Path("out")).as_posix()
    'out/part-3.predictions.csv'
    """
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return output_dir / f"{name}.predictions.csv"


# -- the Ray pipeline ----------------------------------------------------------


def _read_files(batch: dict[str, np.ndarray], *, chunk_rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray task: read each listed file in blocks of ``chunk_rows`` rows, with file index and row numbers.

    A malformed file ends with one marker row whose ``error`` column holds the
    :class:`CsvFormatError` as JSON; rows read before the error are dropped by the driver.
    """
    for file_index, path in zip(batch[_FILE], batch["path"]):
        try:
            for chunk in iter_kaggle_csv(path, chunk_rows=chunk_rows):
                yield _block(int(file_index), chunk.first_row, chunk.images.reshape(len(chunk), -1),
                             chunk.labels, "")
        except CsvFormatError as exc:
            problem = json.dumps({"line": exc.line, "column": exc.column, "problem": exc.problem})
            yield _block(int(file_index), -1, np.zeros((1, len(PIXEL_COLUMNS)), np.uint8), None, problem)


def _block(file_index: int, first_row: int, pixels: np.ndarray, labels: np.ndarray | None,
           error: str) -> dict[str, np.ndarray]:
    rows = len(pixels)
    # Column-major, so each pixel column is one contiguous run for Arrow to copy.
    by_column = np.asfortranarray(pixels)
    block: dict[str, np.ndarray] = {
        _FILE: np.full(rows, file_index, dtype=np.int32),
        _ROW: np.arange(first_row, first_row + rows, dtype=np.int64),
        _TRUTH: (np.full(rows, _NO_LABEL, dtype=np.int16) if labels is None else labels.astype(np.int16)),
        _ERROR: np.full(rows, error, dtype=object),
    }
    block.update({name: by_column[:, j] for j, name in enumerate(PIXEL_COLUMNS)})
    return block


def predict_csv_files(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str] | bytes | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    proba: bool = False,
    providers: Providers = "auto",
    threads: int | None = None,
    precision: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    ray_init_options: dict[str, Any] | None = None,
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
        batch_size: Images per onnxruntime call.
        chunk_rows: Rows per Ray block (a file is read in blocks of this many rows).
        workers: Actors in the pool (default: see :func:`plan_resources`).
        gpus_per_worker: GPUs each actor asks Ray for.
        address: A Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).
        ray_init_options: More keyword arguments for ``ray.init`` when this call starts Ray.

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
    out_dir = _checked_destinations(files, output, output_dir)
    # The workers get the model's bytes, so they need not see the same file system.
    source = load_model(model, precision=precision or "fp32")
    model_payload = None if model is None else source.data

    ray = require("ray", "ray")
    require("ray.data", "ray")
    owned = not ray.is_initialized()
    if owned:
        options = {"include_dashboard": False, **(ray_init_options or {})}
        ray.init(address=address or "local", **options)
    try:
        resources = ray.cluster_resources()
        plan = plan_resources(resources.get("CPU", 0.0), resources.get("GPU", 0.0), workers=workers,
                              gpus_per_worker=gpus_per_worker, threads=threads)
        settings = {"providers": providers, "threads": plan.threads, "precision": precision,
                    "batch_size": batch_size}
        # One task, placed like an actor, builds the classifier first, so a bad
        # model or a provider the workers lack fails before the pipeline starts
        # (Ray keeps only the text of an error raised in an actor's constructor).
        check = ray.remote(num_cpus=plan.actor_cpus, num_gpus=plan.gpus_per_worker)(_describe_classifier)
        try:
            class_labels, used_providers = ray.get(check.remote(model_payload, **settings))
            columns = _collect(_build_dataset(ray, files, plan, model_payload, chunk_rows=chunk_rows,
                                              proba=proba, **settings))
        except Exception as exc:
            # Our own errors reach us wrapped in Ray's exceptions: raise the original.
            ours = _our_error(exc)
            if ours is None:
                raise
            raise ours from None
    finally:
        if owned:
            ray.shutdown()

    errors, per_file, truth = _split_by_file(files, columns)
    written: list[Path] = []
    if out_dir is not None:
        for path, frame in per_file.items():
            destination = per_file_output(path, out_dir)
            _write_csv(frame, destination)
            written.append(destination)
    if errors:
        raise CsvFilesError(errors, written, scored=len(per_file))

    combined = pd.concat(list(per_file.values()), ignore_index=True)
    combined["ImageId"] = np.arange(1, len(combined) + 1, dtype=np.int64)
    if output is not None:
        _write_csv(combined, Path(output))
    seconds = time.perf_counter() - started_at
    pool = (f"{plan.workers} Ray workers × {plan.gpus_per_worker:g} GPU" if plan.gpus_per_worker
            else f"{plan.workers} Ray workers × {plan.actor_cpus:g} CPU")
    combined.attrs.update({
        "model": source.name,
        "providers": [f"{used_providers[0]} ({pool})", *used_providers[1:]],
        "rows": len(combined),
        "seconds": seconds,
        "images_per_second": len(combined) / seconds if seconds > 0 else math.inf,
        "evaluation": _evaluation(truth, combined["Label"].to_numpy(), class_labels),
        "files": [(path, len(frame)) for path, frame in per_file.items()],
        "plan": plan,
    })
    return combined


def _checked_destinations(files: list[Path], output: Any, output_dir: Any) -> Path | None:
    """Fail before any work when an output cannot be written or two files would share an output."""
    if output is not None:
        parent = Path(output).parent
        if Path(output).is_dir() or not parent.is_dir():
            raise MnistOnnxError(f"{output}: cannot write, expected a file path in an existing directory")
    if output_dir is None:
        return None
    out_dir = Path(output_dir)
    if not out_dir.is_dir():
        raise MnistOnnxError(f"{out_dir}: expected an existing directory for the per-file outputs")
    owners: dict[Path, Path] = {}
    for path in files:
        destination = per_file_output(path, out_dir)
        if destination in owners:
            raise MnistOnnxError(f"{owners[destination]} and {path} would both write {destination}; "
                                 f"rename one, or score them in separate runs")
        owners[destination] = path
    return out_dir


def _build_dataset(ray: Any, files: list[Path], plan: ResourcePlan, model: bytes | None, *, chunk_rows: int,
                   proba: bool, **settings: Any) -> Any:
    """The Ray Dataset that reads the files in tasks and scores them on the actor pool."""
    items = [{_FILE: i, "path": str(path)} for i, path in enumerate(files)]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    # Reading is a task stage of its own, not fused into the actors (see plan_resources).
    dataset = dataset.map_batches(_read_files, fn_kwargs={"chunk_rows": chunk_rows}, batch_size=1,
                                  batch_format="numpy", num_cpus=plan.read_cpus)
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


def _describe_classifier(model: bytes | None, **settings: Any) -> tuple[tuple[Any, ...], list[str]]:
    """Ray task: build the classifier as an actor will; return its class labels and providers."""
    classifier = DigitClassifier(model, **settings)
    return classifier.class_labels, classifier.providers


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


def _split_by_file(files: list[Path], columns: dict[str, np.ndarray]
                   ) -> tuple[list[CsvFormatError], dict[Path, pd.DataFrame], np.ndarray]:
    """Put Ray's rows back in input order and split them by file.

    Returns:
        The error of each bad file; the predictions of each good file in row
        order (``ImageId`` 1-based); the label column of the good files' rows
        in input order (-1 where a file has none).
    """
    # Ray returns blocks in whatever order the workers finish them.
    order = np.lexsort((columns[_ROW], columns[_FILE]))
    file_index = columns[_FILE][order]
    bounds = np.searchsorted(file_index, np.arange(len(files) + 1))
    failed = {int(columns[_FILE][j]): json.loads(columns[_ERROR][j]) for j in np.flatnonzero(columns[_ROW] < 0)}
    outputs = [name for name in columns if name not in (_FILE, _ROW, _TRUTH, _ERROR)]
    errors: list[CsvFormatError] = []
    per_file: dict[Path, pd.DataFrame] = {}
    kept: list[np.ndarray] = []
    for i, path in enumerate(files):
        if i in failed:
            errors.append(CsvFormatError(str(path), failed[i]["line"], failed[i]["column"], failed[i]["problem"]))
            continue
        rows = order[bounds[i]:bounds[i + 1]]
        if not np.array_equal(columns[_ROW][rows], np.arange(len(rows))):
            raise RuntimeError(f"{path}: Ray returned rows out of sequence")  # a bug, not bad input
        frame = {"ImageId": np.arange(1, len(rows) + 1, dtype=np.int64)}
        frame.update({name: columns[name][rows] for name in outputs})
        per_file[path] = pd.DataFrame(frame)
        kept.append(rows)
    truth = columns[_TRUTH][np.concatenate(kept)] if kept else np.empty(0, np.int16)
    return errors, per_file, truth


def _evaluation(truth: np.ndarray, predicted: np.ndarray, labels: tuple[Any, ...]) -> Evaluation | None:
    """Accuracy and confusion matrix when every row has a label and the model's labels are the digits."""
    if len(truth) == 0 or (truth == _NO_LABEL).any() or labels != tuple(range(10)):
        return None
    confusion = np.bincount(truth.astype(np.int64) * 10 + predicted.astype(np.int64),
                            minlength=100).reshape(10, 10)
    correct = int(np.trace(confusion))
    return Evaluation(rows=len(truth), correct=correct, accuracy=correct / len(truth), labels=labels,
                      confusion=confusion)


def _write_csv(frame: pd.DataFrame, destination: Path) -> None:
    """Write as :meth:`DigitClassifier.predict_csv` does (same format), atomically."""
    with atomic_path(destination) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                frame.to_csv(handle, index=False, lineterminator="\n", float_format="%.6g")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise MnistOnnxError(f"{destination}: cannot write ({exc.strerror or exc})") from None
