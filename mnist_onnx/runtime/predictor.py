"""Digit classification with onnxruntime: in-memory arrays and Kaggle CSVs.

:class:`DigitClassifier` holds one onnxruntime session for many calls (a
service predicting request after request must not rebuild it);
:func:`predict_csv` is the one-call form.  Neither imports TensorFlow, tf2onnx
or onnx.

How the model wants its input comes from the model itself: the
``mnist_onnx.*`` entries of its ONNX ``metadata_props`` when present (see
:mod:`mnist_onnx.runtime.metadata`), otherwise its input shape (N×28×28×1 is
NHWC, N×1×28×28 is NCHW), a pixel scale of 1/255 and the digits 0-9 as class
labels.  Whether the single output holds probabilities or logits comes from
the metadata, or else from a probe run on two images when the classifier is
built; logits go through a softmax, so callers always get probabilities.
"""

from __future__ import annotations

import collections
import contextlib
import math
import weakref
from concurrent.futures import ThreadPoolExecutor
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import onnxruntime as ort
import pandas as pd

from .._fileio import atomic_path
from ..errors import CsvFormatError, ModelError, MnistOnnxError
from .defaults import (BLOCKS_IN_FLIGHT_PER_WORKER, CSV_BLOCK_ROWS, DEFAULT_BATCH_SIZE, DEFAULT_CUDA_BATCH_SIZE,
                       MIN_IMAGES_PER_WORKER, physical_cores)
from .kaggle_csv import (DEFAULT_CHUNK_ROWS, DigitBatch, KaggleCsvInfo, inspect_kaggle_csv, iter_kaggle_csv,
                         parse_block, raw_blocks)
from .metadata import KEY_PRECISION, parse_metadata
from .session import CPU, CUDA, PRECISIONS, ModelSource, Providers, create_session, load_model

__all__ = ["DigitClassifier", "Evaluation", "ModelContract", "predict_csv", "batch_slices", "DEFAULT_BATCH_SIZE"]


_IMAGE_SHAPES = "(N, 28, 28), (N, 28, 28, 1) or (N, 784)"
_T = TypeVar("_T")


def batch_slices(total: int, batch_size: int) -> Iterator[slice]:
    """Yield consecutive slices of at most ``batch_size`` that cover ``range(total)``.

    >>> [(s.start, s.stop) for s in batch_slices(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
    >>> list(batch_slices(0, 3))
    []
    """
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


@dataclass(frozen=True)
class ModelContract:
    """What a model expects and produces, read from its metadata and its signature.

    Attributes:
        input_name: The model's (only) input.
        output_name: The model's (only) output.
        layout: ``"NHWC"`` (N×28×28×1) or ``"NCHW"`` (N×1×28×28).
        pixel_scale: Factor from uint8 pixels to the model's input values (float input).
        uint8_input: The model takes raw uint8 pixels 0-255 (and scales them itself).
        class_labels: The label of each output column; integers when the model's
            labels are all integers or digit strings (the exporter writes "0".."9").
        output_kind: ``"probabilities"`` or ``"logits"``.
        precision: ``"fp32"``, ``"int8"``, or None when the model does not say.
        fixed_batch: The model's static batch size, or None when it is dynamic.
    """

    input_name: str
    output_name: str
    layout: str
    pixel_scale: float
    class_labels: tuple[Any, ...]
    output_kind: str
    precision: str | None
    fixed_batch: int | None = None
    uint8_input: bool = False


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Accuracy of predictions on a CSV that carries a ``label`` column.

    Attributes:
        rows: Images scored.
        correct: Images whose predicted label equals the file's label.
        accuracy: ``correct / rows``.
        labels: The class labels, in the order of the confusion matrix.
        confusion: Counts, shape (classes, classes): row = true label, column = predicted.
    """

    rows: int
    correct: int
    accuracy: float
    labels: tuple[Any, ...]
    confusion: np.ndarray = field(repr=False)

    def confusion_frame(self) -> pd.DataFrame:
        """The confusion matrix as a DataFrame (index ``true``, columns ``predicted``)."""
        return pd.DataFrame(
            self.confusion,
            index=pd.Index(self.labels, name="true"),
            columns=pd.Index(self.labels, name="predicted"),
        )


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _read_contract(session: ort.InferenceSession, source: ModelSource) -> ModelContract:
    name = source.name
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"{name}: expected a model with 1 input (images), got {len(inputs)}: "
                         f"{', '.join(i.name for i in inputs)}")
    if len(outputs) != 1:
        raise ModelError(f"{name}: expected a model with 1 output (class scores), got {len(outputs)}: "
                         f"{', '.join(o.name for o in outputs)}")
    node, out = inputs[0], outputs[0]
    if node.type not in ("tensor(float)", "tensor(uint8)"):
        raise ModelError(f"{name}: expected a float32 or uint8 image input, got {node.type} for input {node.name!r}")
    try:
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    except ModelError as exc:
        raise ModelError(f"{name}: {exc}") from None

    shape = list(node.shape or [])
    shown = "×".join(str(d) if _static(d) else "N" for d in shape) or "a scalar"
    if len(shape) != 4:
        raise ModelError(f"{name}: expected input shape N×28×28×1 or N×1×28×28, got {shown}")
    spatial = [_static(d) for d in shape[1:]]
    layout = meta.input_layout
    if layout is not None:
        wanted = (28, 28, 1) if layout == "NHWC" else (1, 28, 28)
        if not all(d in (None, want) for d, want in zip(spatial, wanted)):
            raise ModelError(f"{name}: metadata says {layout} but the input shape is {shown}")
    elif spatial in ([28, 28, 1], [1, 28, 28]):
        layout = "NHWC" if spatial == [28, 28, 1] else "NCHW"
    else:
        raise ModelError(f"{name}: expected input shape N×28×28×1 or N×1×28×28, got {shown}")

    out_shape = list(out.shape or [])
    if len(out_shape) != 2:
        shown_out = "×".join(str(d) if _static(d) else "N" for d in out_shape) or "a scalar"
        raise ModelError(f"{name}: expected output shape N×classes, got {shown_out} for output {out.name!r}")
    class_labels = meta.class_labels if meta.class_labels is not None else tuple(range(10))
    if all(isinstance(label, int) or isinstance(label, str) and label.isdigit() for label in class_labels):
        # The exporter writes the digits as JSON strings ("0".."9"); a Kaggle Label is an integer.
        class_labels = tuple(int(label) for label in class_labels)
    classes = _static(out_shape[1])
    if classes is not None and classes != len(class_labels):
        raise ModelError(f"{name}: expected {len(class_labels)} output classes "
                         f"({'digits 0-9' if meta.class_labels is None else 'from its class labels'}), "
                         f"got {classes} in output {out.name!r}")
    return ModelContract(
        input_name=node.name, output_name=out.name, layout=layout,
        pixel_scale=meta.pixel_scale if meta.pixel_scale is not None else 1.0 / 255.0,
        class_labels=class_labels, output_kind=meta.output_kind or "", precision=meta.precision,
        fixed_batch=_static(shape[0]), uint8_input=node.type == "tensor(uint8)",
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(scores)) and scores.min() >= 0
                and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))


def _prefetched(items: Iterable[_T]) -> Iterator[_T]:
    """Produce ``items`` from a background thread, one ahead of the consumer.

    The CSV parser (pandas' C tokenizer) and onnxruntime both release the GIL,
    so reading chunk k+1 can overlap inference on chunk k.  Exceptions from the
    producer are re-raised in the consumer, in order.
    """
    slot: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(message: tuple[str, Any]) -> bool:
        """Put ``message`` in the slot unless the consumer has gone; say whether it was put."""
        while not stop.is_set():
            try:
                slot.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(("error", exc))

    worker = threading.Thread(target=produce, name="mnist-onnx-csv-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slot.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


class DigitClassifier:
    """An ONNX digit classifier behind one reusable onnxruntime session.

    Example::

        clf = DigitClassifier("digit_cnn.onnx", providers="cpu")
        labels = clf.predict(images)          # uint8 (N, 28, 28) -> int64 (N,)
        frame = clf.predict_csv("test.csv", output="submission.csv")

    Args:
        model: None for the bundled model of ``precision``, a path to an
            ``.onnx`` file, the model's bytes, or an ``onnx.ModelProto``.
        providers: ``"auto"``, ``"cpu"``, ``"cuda"`` or onnxruntime provider
            names (see :func:`mnist_onnx.runtime.session.resolve_providers`).
        threads: CPU threads for inference; None uses one per physical core.
            An input of a few images runs as one onnxruntime call with this
            many intra-op threads (the lowest latency); a larger one is split
            into batches that this many single-threaded runs of a second
            session predict concurrently, which keeps each core's activations
            in its own cache: on the 2-core development machine 7% more
            images/s for the fp32 model and 15-40% more for int8 than
            intra-op threads over the same batches
            (``python benchmarks/runtime_parallelism.py MODEL.onnx``).
        spinning: Whether idle onnxruntime threads spin waiting for work; None
            uses the measured default (on).  Turn it off when other busy
            threads share the cores.
        precision: ``"fp32"`` or ``"int8"``: which bundled model when ``model``
            is None (default fp32); with an explicit model, it must agree
            with the model's ``mnist_onnx.precision`` metadata when that exists.
        batch_size: Images per onnxruntime call; None uses the measured
            default of the provider in use: 16 on the CPU, 1,024 on CUDA
            (see :mod:`mnist_onnx.runtime.defaults`).
        cuda_device: The GPU to use with the CUDA provider.

    Raises:
        ModelError: If the model cannot be loaded or is not a digit classifier
            (wrong input shape, wrong number of inputs, outputs or classes).
        ProviderError: If a requested execution provider is not available.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | Any | None = None,
        *,
        providers: Providers = "auto",
        threads: int | None = None,
        spinning: bool | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
        cuda_device: int = 0,
    ) -> None:
        if precision is not None and precision not in PRECISIONS:
            raise MnistOnnxError(f"expected precision 'fp32' or 'int8', got {precision!r}")
        if batch_size is not None:
            _check_batch_size(batch_size)
        source = load_model(model, precision=precision or "fp32")
        self.session = create_session(source, providers=providers, threads=threads, spinning=spinning,
                                      cuda_device=cuda_device)
        on_cuda = self.session.get_providers()[0] == CUDA
        self.batch_size = _check_batch_size(
            batch_size if batch_size is not None else DEFAULT_CUDA_BATCH_SIZE if on_cuda else DEFAULT_BATCH_SIZE)
        self.model_name = source.name
        contract = _read_contract(self.session, source)
        if model is not None and precision is not None and contract.precision not in (None, precision):
            raise ModelError(f"{source.name}: expected precision {precision}, got {contract.precision} "
                             f"(the model's {KEY_PRECISION} metadata)")
        if contract.precision is None and source.bundled_precision:
            contract = replace(contract, precision=source.bundled_precision)
        # Where IOBinding places inputs and outputs: the GPU when CUDA runs the
        # model, else None (plain session.run).  Tests set ("cpu", 0) to
        # exercise the binding code on machines without a GPU.
        self._bound_device: tuple[str, int] | None = (
            ("cuda", cuda_device) if self.session.get_providers()[0] == CUDA else None
        )
        # Data-parallel CPU inference for large inputs: a second, single-threaded
        # session (created on first use) run from this many threads at once.
        self._workers = (threads or physical_cores()) if self.session.get_providers()[0] == CPU else 1
        self._source = source
        self._serial_session: ort.InferenceSession | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._parallel_lock = threading.Lock()
        # uint8 pixel -> model input, computed once in float64 and rounded, so
        # pixel_scale=1/255 gives exactly float32(p) / float32(255) as in training.
        self._lut = (np.arange(256, dtype=np.float64) * contract.pixel_scale).astype(np.float32)
        self.contract = self._probe(contract)

    # -- public API ---------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return list(self.session.get_providers())

    @property
    def class_labels(self) -> tuple[Any, ...]:
        """The label of each probability column."""
        return self.contract.class_labels

    def predict_proba(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities for in-memory images.

        Args:
            images: uint8 pixels 0-255, or float pixels already scaled to
                [0, 1], shaped (N, 28, 28), (N, 28, 28, 1) or (N, 784).
            batch_size: Images per onnxruntime call (default: the classifier's).

        Returns:
            float32 array (N, classes); column j is ``class_labels[j]``.

        Raises:
            MnistOnnxError: If the array is empty or has the wrong dtype,
                shape or value range, or contains NaN.
        """
        pixels = _validated_images(images)
        return self._probabilities(pixels, _check_batch_size(self.batch_size if batch_size is None else batch_size))

    def predict(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Predicted labels for in-memory images (see :meth:`predict_proba` for the input forms).

        Returns:
            Array (N,) of class labels (int64 for the digits 0-9).
        """
        return self._labels(self.predict_proba(images, batch_size=batch_size).argmax(axis=1))

    def predict_csv(
        self,
        path: str | os.PathLike[str],
        *,
        output: str | os.PathLike[str] | None = None,
        proba: bool = False,
        batch_size: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        overlap_reading: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> pd.DataFrame:
        """Predict every row of a Kaggle CSV, streaming it in chunks.

        Args:
            path: A Kaggle ``test.csv`` (784 pixel columns) or ``train.csv``
                (``label`` first), plain or gzipped.  A label column is
                never shown to the model; it is used to score the predictions.
            output: Where to write the predictions as CSV, atomically: a Kaggle
                submission (header exactly ``ImageId,Label``) unless ``proba``.
                Nothing is left at ``output`` if anything fails.
            proba: Add columns ``p<label>`` (each class's probability) and
                ``confidence`` (the highest probability), to the result and to ``output``.
            batch_size: Images per onnxruntime call (default: the classifier's).
            chunk_rows: CSV rows parsed at a time (at most; the CPU's
                parallel path hands out blocks of 256 lines); memory use is
                proportional to this and to ``batch_size``, not to the file's
                size: with the bundled fp32 model and batch 16, peak RSS
                205 MiB for test.csv and 218 MiB for a file 10 times as long
                (280,000 rows), int8 182 and 193 MiB; the returned DataFrame
                takes 16 bytes a row without ``proba``
                (``python benchmarks/runtime_predict_csv.py memory MODEL.onnx
                --batch-size 16 --times 10``).
            overlap_reading: Parse while predicting.  On the CPU with more
                than one worker, each worker thread takes a block of about
                512 raw lines, parses it (numpy, which releases the GIL) and
                predicts it with the single-threaded session, so parsing and
                inference share the cores with no thread waiting on another;
                results are put back in file order.  Elsewhere (CUDA, one
                thread) a background thread parses the next chunk while the
                current one is predicted.  With False, each chunk is parsed,
                then predicted.  Figures in ``benchmarks/levers.md``.
            progress: Called with the number of rows done after each chunk (or parallel block).

        Returns:
            A DataFrame with ``ImageId`` (1-based, in file order) and ``Label``
            (plus the probability columns with ``proba``).  Its ``attrs`` hold
            ``model`` (where the model came from), ``providers``, ``rows``,
            ``seconds`` (wall time), ``images_per_second``, and ``evaluation``:
            an :class:`Evaluation` (accuracy and confusion matrix) when the
            file has a label column, else None.

        Raises:
            CsvFormatError: If the CSV is malformed (names the file, line and column).
            MnistOnnxError: If ``output`` cannot be written.
        """
        size = _check_batch_size(self.batch_size if batch_size is None else batch_size)
        started = time.perf_counter()
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        info = inspect_kaggle_csv(path)  # checks the header now
        results: Iterable[tuple[DigitBatch, np.ndarray]]
        if overlap_reading and self._workers > 1:
            results = self._csv_blocks_in_parallel(info, min(chunk_rows, CSV_BLOCK_ROWS), size)
        else:
            chunks: Iterable[DigitBatch] = iter_kaggle_csv(info.path, chunk_rows=chunk_rows)
            if overlap_reading:
                chunks = _prefetched(chunks)
            results = ((batch, self._probabilities(batch.images, size)) for batch in chunks)
        labels = self.contract.class_labels
        # A file's labels are the digits 0-9; scoring needs each digit's output column.
        digit_column = np.array([labels.index(d) if d in labels else -1 for d in range(10)])
        can_score = bool((digit_column >= 0).all())
        confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
        has_truth = None
        predicted_parts: list[np.ndarray] = []
        proba_parts: list[np.ndarray] = []
        rows = 0
        with contextlib.ExitStack() as stack:
            # Closed on the way out, so no reader thread or block task outlives this call, even on an error.
            results = stack.enter_context(contextlib.closing(iter(results)))  # type: ignore[type-var]
            out_file = None
            if output is not None:
                tmp = stack.enter_context(atomic_path(output))
                out_file = stack.enter_context(_open_for_writing(tmp, output))
            for batch, probabilities in results:
                if not len(batch):
                    continue  # a block of blank lines
                predicted = probabilities.argmax(axis=1)
                predicted_parts.append(predicted.astype(np.int32))
                if proba:
                    proba_parts.append(probabilities)
                if has_truth is None:
                    has_truth = batch.labels is not None and can_score
                if has_truth:
                    confusion += np.bincount(digit_column[batch.labels] * len(labels) + predicted,
                                             minlength=len(labels) ** 2).reshape(len(labels), len(labels))
                if out_file is not None:
                    chunk_frame = self._frame(rows, predicted, probabilities if proba else None)
                    _write_chunk(out_file, chunk_frame, header=rows == 0, destination=output)
                rows += len(batch)
                if progress is not None:
                    progress(rows)
            if rows == 0:
                raise CsvFormatError(str(info.path), None, None, "has a header but no data rows")
            if out_file is not None:
                _finish_file(out_file, output)
        predicted_all = np.concatenate(predicted_parts)
        frame = self._frame(0, predicted_all, np.concatenate(proba_parts) if proba else None)
        seconds = time.perf_counter() - started
        evaluation = None
        if has_truth:
            correct = int(np.trace(confusion))
            evaluation = Evaluation(rows=rows, correct=correct, accuracy=correct / rows,
                                    labels=labels, confusion=confusion)
        frame.attrs.update({
            "model": self.model_name,
            "providers": self.providers,
            "rows": rows,
            "seconds": seconds,
            "images_per_second": rows / seconds if seconds > 0 else math.inf,
            "evaluation": evaluation,
        })
        return frame

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model_name!r}, providers={self.providers}, "
                f"layout={self.contract.layout}, precision={self.contract.precision})")

    # -- internals ----------------------------------------------------------

    def _labels(self, indices: np.ndarray) -> np.ndarray:
        labels = self.contract.class_labels
        if labels == tuple(range(len(labels))):
            return indices.astype(np.int64)
        if all(isinstance(label, int) for label in labels):
            return np.asarray(labels, dtype=np.int64)[indices]
        return np.asarray(labels, dtype=object)[indices]

    def _frame(self, first_row: int, predicted: np.ndarray, probabilities: np.ndarray | None) -> pd.DataFrame:
        columns: dict[str, Any] = {
            "ImageId": np.arange(first_row + 1, first_row + 1 + len(predicted), dtype=np.int64),
            "Label": self._labels(predicted),
        }
        if probabilities is not None:
            for j, label in enumerate(self.contract.class_labels):
                columns[f"p{label}"] = probabilities[:, j]
            columns["confidence"] = probabilities.max(axis=1)
        return pd.DataFrame(columns)

    def _model_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, 28, 28, 1) or float32 in [0, 1] -> the model's input (float32, or uint8 pixels)."""
        if self.contract.uint8_input:
            # Floats in [0, 1] go to the nearest of the 256 pixel values, as a
            # quantized model's input QuantizeLinear (scale 1/255) would round them.
            x = pixels if pixels.dtype == np.uint8 else np.rint(np.asarray(pixels, np.float32) * np.float32(255.0)).astype(np.uint8)
        elif pixels.dtype == np.uint8:
            x = np.take(self._lut, pixels)
        else:
            x = np.asarray(pixels, dtype=np.float32)
            if self.contract.pixel_scale != 1.0 / 255.0:
                x = x * np.float32(255.0 * self.contract.pixel_scale)
        # With one channel, NHWC (n, 28, 28, 1) and NCHW (n, 1, 28, 28) have the same memory order.
        return x.reshape((len(x), 1, 28, 28) if self.contract.layout == "NCHW" else (len(x), 28, 28, 1))

    def _run(self, x: np.ndarray, session: ort.InferenceSession | None = None) -> np.ndarray:
        contract = self.contract
        if session is not None:
            return session.run([contract.output_name], {contract.input_name: x})[0]
        if self._bound_device is not None:
            # Input copied to the GPU as an OrtValue, output left there by onnxruntime
            # and copied back once.  Measured on an H100 (benchmarks/results/gpu_check_h100.md):
            # as fast as a plain session.run at the default batch of 1,024, within noise;
            # binding host arrays instead (bind_cpu_input) was no faster either.
            device, device_id = self._bound_device
            binding = self.session.io_binding()
            on_device = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, device_id)
            binding.bind_ortvalue_input(contract.input_name, on_device)
            binding.bind_output(contract.output_name, device, device_id)
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run([contract.output_name], {contract.input_name: x})[0]

    def _scores(self, x: np.ndarray, session: ort.InferenceSession | None = None) -> np.ndarray:
        fixed = self.contract.fixed_batch
        if fixed is None or len(x) == fixed:
            return self._run(x, session)
        # A model exported with a static batch size gets exactly that many rows per call.
        parts = []
        for part in batch_slices(len(x), fixed):
            chunk = x[part]
            if len(chunk) < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - len(chunk),) + chunk.shape[1:], chunk.dtype)])
            parts.append(self._run(chunk, session)[: part.stop - part.start])
        return np.concatenate(parts)

    def _parallel(self) -> tuple[ort.InferenceSession, ThreadPoolExecutor]:
        """The single-threaded session and the worker threads of the data-parallel path."""
        with self._parallel_lock:
            if self._serial_session is None or self._executor is None:
                self._serial_session = create_session(self._source, providers="cpu", threads=1)
                self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="mnist-onnx")
                # The idle worker threads end with the classifier.
                weakref.finalize(self, self._executor.shutdown, wait=False)
            return self._serial_session, self._executor

    def _csv_blocks_in_parallel(
        self, info: KaggleCsvInfo, block_rows: int, batch_size: int
    ) -> Iterator[tuple[DigitBatch, np.ndarray]]:
        """Parse and predict blocks of the CSV on the worker threads; yield them in file order.

        The calling thread only reads raw bytes and hands out blocks, at most
        ``BLOCKS_IN_FLIGHT_PER_WORKER`` a worker ahead, so memory stays bounded.
        (Tried on CUDA too, with worker threads that only parse: on an H100
        machine no faster than one reader thread, so CUDA keeps that.)
        """
        session, executor = self._parallel()

        def task(data: bytes) -> tuple[DigitBatch, np.ndarray]:
            batch = parse_block(info, data)
            return batch, self._in_order(batch.images, batch_size, session)

        pending: collections.deque[Any] = collections.deque()
        blocks = raw_blocks(info, block_rows)
        in_flight = BLOCKS_IN_FLIGHT_PER_WORKER * self._workers
        try:
            for data in blocks:
                pending.append(executor.submit(task, data))
                if len(pending) >= in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            blocks.close()
            # A task still running finishes its block (tens of milliseconds) on its own.

    def _probabilities(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        n, workers = len(pixels), self._workers
        if workers < 2 or n < workers * MIN_IMAGES_PER_WORKER:
            return self._in_order(pixels, batch_size)
        session, executor = self._parallel()
        result = np.empty((n, len(self.contract.class_labels)), dtype=np.float32)

        def score(part: slice) -> None:
            result[part] = self._scores(self._model_input(pixels[part]), session)

        for _ in executor.map(score, batch_slices(n, min(batch_size, -(-n // workers)))):  # re-raises the first failure
            pass
        return self._as_probabilities(result)

    def _in_order(self, pixels: np.ndarray, batch_size: int,
                  session: ort.InferenceSession | None = None) -> np.ndarray:
        """Probabilities of ``pixels``, batch after batch in this thread (``session``: None for the main one)."""
        result = np.empty((len(pixels), len(self.contract.class_labels)), dtype=np.float32)
        for part in batch_slices(len(pixels), batch_size):
            result[part] = self._scores(self._model_input(pixels[part]), session)
        return self._as_probabilities(result)

    def _as_probabilities(self, scores: np.ndarray) -> np.ndarray:
        return _softmax(scores) if self.contract.output_kind == "logits" else scores

    def _probe(self, contract: ModelContract) -> ModelContract:
        """Run an all-black and an all-white image: the model must really produce (2, classes) scores."""
        probe = np.zeros((2, 28, 28, 1), dtype=np.uint8)
        probe[1] = 255
        self.contract = contract
        try:
            scores = np.asarray(self._scores(self._model_input(probe)))
        except Exception as exc:  # onnxruntime's own exception types
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.model_name}: the model fails on a 2-image batch: {message}") from None
        classes = len(contract.class_labels)
        if scores.ndim != 2 or scores.shape != (2, classes):
            raise ModelError(f"{self.model_name}: expected output shape (2, {classes}) for 2 images, "
                             f"got {scores.shape}")
        if not np.issubdtype(scores.dtype, np.floating):
            raise ModelError(f"{self.model_name}: expected float class scores, got {scores.dtype}")
        if not contract.output_kind:
            kind = "probabilities" if _looks_like_probabilities(scores.astype(np.float32)) else "logits"
            contract = replace(contract, output_kind=kind)
        return contract


def _check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise MnistOnnxError(f"expected batch_size to be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _validated_images(images: Any) -> np.ndarray:
    """Check an in-memory image array and return it as (N, 28, 28, 1), uint8 or float."""
    if isinstance(images, (pd.DataFrame, pd.Series)):
        images = images.to_numpy()
    array = np.asarray(images)
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        pass
    else:
        hint = ""
        if np.issubdtype(array.dtype, np.integer):
            hint = " (if the values are 0-255, convert with images.astype(np.uint8))"
        raise MnistOnnxError(f"expected uint8 pixels 0-255 or float pixels in [0, 1], got dtype {array.dtype}{hint}")
    shape = array.shape
    if shape in ((28, 28), (28, 28, 1), (784,)):
        raise MnistOnnxError(f"expected a batch of images shaped {_IMAGE_SHAPES}, got one image shaped {shape}; "
                             f"pass images[None] for a batch of one")
    if not (len(shape) == 3 and shape[1:] == (28, 28) or len(shape) == 4 and shape[1:] == (28, 28, 1)
            or len(shape) == 2 and shape[1] == 784):
        raise MnistOnnxError(f"expected images shaped {_IMAGE_SHAPES}, got {shape}")
    if shape[0] == 0:
        raise MnistOnnxError(f"expected at least one image, got an empty array shaped {shape}")
    array = array.reshape(len(array), 28, 28, 1)
    if array.dtype != np.uint8:
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(np.argmin(finite.reshape(len(array), -1).all(axis=1)))
            value = array[bad][~finite[bad]].flat[0]
            raise MnistOnnxError(f"expected finite pixel values, got {value} in image {bad}")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            hint = " (divide by 255, or pass uint8 pixels)" if high > 1 else ""
            raise MnistOnnxError(f"expected float pixels in [0, 1], got values from {low:g} to {high:g}{hint}")
    return array


@contextlib.contextmanager
def _open_for_writing(tmp: os.PathLike[str], destination: Any) -> Iterator[Any]:
    try:
        handle = open(tmp, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise MnistOnnxError(f"{destination}: cannot write ({exc.strerror or exc})") from None
    with handle:
        yield handle


def _write_chunk(handle: Any, frame: pd.DataFrame, *, header: bool, destination: Any) -> None:
    try:
        frame.to_csv(handle, header=header, index=False, lineterminator="\n", float_format="%.6g")
    except OSError as exc:
        raise MnistOnnxError(f"{destination}: cannot write ({exc.strerror or exc})") from None


def _finish_file(handle: Any, destination: Any) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as exc:
        raise MnistOnnxError(f"{destination}: cannot write ({exc.strerror or exc})") from None


def predict_csv(
    path: str | os.PathLike[str],
    model: str | os.PathLike[str] | bytes | Any | None = None,
    *,
    batch_size: int | None = None,
    providers: Providers = "auto",
    threads: int | None = None,
    precision: str | None = None,
    output: str | os.PathLike[str] | None = None,
    proba: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overlap_reading: bool = True,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Predict a Kaggle CSV with an ONNX digit classifier (one call, one session).

    Builds a :class:`DigitClassifier` and calls its
    :meth:`~DigitClassifier.predict_csv`; to predict many files or arrays,
    build the classifier once instead.

    Args:
        path: A Kaggle ``test.csv`` or ``train.csv``, plain or gzipped.
        model: None for the bundled model of ``precision``, a path to an
            ``.onnx`` file, or the model's bytes.
        batch_size: Images per onnxruntime call; None: 16 on the CPU, 1,024 on CUDA.
        providers: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"``, or a list of onnxruntime provider names.
        threads: onnxruntime intra-op threads; None uses the measured default.
        precision: ``"fp32"`` (default) or ``"int8"``: which bundled model.
        output: Write the predictions here atomically; a Kaggle submission
            (``ImageId,Label``) unless ``proba``.
        proba: Add ``p0``..``p9`` and ``confidence`` columns.
        chunk_rows: CSV rows parsed at a time (bounds memory use).
        overlap_reading: Parse while predicting (see :meth:`DigitClassifier.predict_csv`).
        progress: Called with the number of rows done after each chunk (or parallel block).

    Returns:
        The predictions as a DataFrame; see :meth:`DigitClassifier.predict_csv`
        for its columns and ``attrs`` (accuracy and confusion matrix when the
        file has labels).

    Raises:
        CsvFormatError: If the CSV is malformed.
        ModelError: If the model cannot be used.
        ProviderError: If a requested provider is not available.
        MnistOnnxError: If ``output`` cannot be written.
    """
    classifier = DigitClassifier(model, providers=providers, threads=threads, precision=precision,
                                 batch_size=batch_size)
    return classifier.predict_csv(path, output=output, proba=proba, chunk_rows=chunk_rows,
                                  overlap_reading=overlap_reading, progress=progress)
