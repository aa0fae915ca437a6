"""Digit classification with onnxruntime: in-memory arrays and Kaggle CSVs.

:class:`DigitClassifier` holds one onnxruntime session for many calls (a
service predicting request after request must not rebuild it);
:func:`predict_csv` is the one-call form.  Neither imports TensorFlow, tf2onnx
or onnx.  What the model takes and gives is read by :mod:`.contract`; the
session comes from :mod:`.session`; reading and scoring a CSV is in
:mod:`.csv_predict`; frames, scoring and the CSV writer are in :mod:`.results`.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

from ..errors import MnistOnnxError, ModelError
from . import acceleration, csv_predict
from ._pipeline import batch_slices
from ._types import ModelInput, PathLike, Precision, Providers, check_batch_size, check_precision
from .contract import (
    ModelContract,
    ModelInputConverter,
    label_values,
    probe_images,
    probed,
    read_contract,
    single_image,
    softmax,
    validated_images,
)
from .contract_check import InvertedDigitsWarning, check_at_load, count_bright_borders, inverted_message
from .defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CUDA_BATCH_SIZE,
    DEFAULT_OPENVINO_BATCH_SIZE,
    MIN_IMAGES_PER_WORKER,
    physical_cores,
)
from .kaggle_csv import DEFAULT_CHUNK_ROWS
from .model_source import first_line, load_model
from .openvino import OPENVINO, OpenVINOConfig, run_padded
from .results import Evaluation
from .session import CPU, CUDA, create_session

__all__ = ["DigitClassifier", "Evaluation", "ModelContract", "predict_csv", "batch_slices", "DEFAULT_BATCH_SIZE"]


class DigitClassifier:
    """An ONNX digit classifier behind one reusable onnxruntime session.

    Example::

        clf = DigitClassifier("digit_cnn.onnx", providers="cpu")
        labels = clf.predict(images)          # uint8 (N, 28, 28) -> int64 (N,)
        frame = clf.predict_csv("test.csv", output="submission.csv")

    Args:
        model: None for the bundled model of ``precision``, a path to an
            ``.onnx`` file, the model's bytes, or an ``onnx.ModelProto``.
        providers: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"openvino"`` or
            onnxruntime provider names (see
            :func:`mnist_onnx.runtime.session.resolve_providers`).  ``"auto"``
            without CUDA runs the faster of the CPU provider and OpenVINO for
            this model and batch size, measured once per machine and cached
            (:mod:`mnist_onnx.runtime.acceleration`; the choice made is
            :attr:`provider_choice`; calls below its measured crossover, or that
            OpenVINO would pad, run on the CPU provider).  On OpenVINO, the labels of the bundled
            held-out digits are checked against the CPU provider's once per
            process and model.
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
            ``"bf16"``: the fp32 model with bf16 compute on OpenVINO (CPUs with
            AMX or AVX-512 BF16), refused unless it passes the bf16 gate.
        batch_size: Images per onnxruntime call; None uses the measured
            default of the provider in use: 16 on the CPU, 512 on OpenVINO, 1,024 on CUDA
            (see :mod:`mnist_onnx.runtime.defaults`).
        cuda_device: The GPU to use with the CUDA provider.
        pixel_scale: Float input = pixel (0-255) × this (default: the model's
            ``mnist_onnx.pixel_scale``, else 1/255); 1 for a model that divides by 255 itself.
        normalize: ``(mean, std)``: input = (pixel × pixel_scale - mean) / std, e.g.
            ``(0.1307, 0.3081)`` (PyTorch's MNIST ``Normalize``); overrides ``mnist_onnx.normalize``.
        output: The output holding the class scores (default: the only N×classes one).

    A model without ``mnist_onnx.*`` metadata is checked on held-out digits at load;
    if it looks fed wrongly, a :class:`~.contract_check.ContractWarning` names the
    option that works (:func:`~.contract_check.check_at_load`); what was asked is still used.

    Raises:
        ModelError: If the model cannot be loaded or is not a digit classifier
            (wrong input shape, wrong number of inputs, outputs or classes).
        ProviderError: If a requested execution provider is not available, or
            a pinned OpenVINO labels the bundled digits differently from the CPU provider.
        MissingExtraError: If OpenVINO or bf16 is asked for without the ``openvino`` extra.
        GateError: If ``precision="bf16"`` fails the bf16 gate (the message has the figures).
    """

    _small_calls = acceleration.SmallCalls(None, False, 1, lambda: None)  # no routing until __init__ settles it

    def __init__(
        self,
        model: ModelInput = None,
        *,
        providers: Providers = "auto",
        threads: int | None = None,
        spinning: bool | None = None,
        precision: Precision | Literal["bf16"] | None = None,
        batch_size: int | None = None,
        cuda_device: int = 0,
        pixel_scale: float | None = None,
        normalize: tuple[float, float] | None = None,
        output: str | None = None,
    ) -> None:
        compute_bf16 = precision == "bf16"
        precision = check_precision("fp32" if compute_bf16 else precision)
        if batch_size is not None:
            check_batch_size(batch_size)
        source = load_model(model, precision=precision)

        def pinned(provider: str) -> DigitClassifier:
            return DigitClassifier(
                source,  # type: ignore[arg-type]  # a loaded ModelSource passes through load_model
                providers=provider,
                threads=threads,
                spinning=spinning,
                precision=precision,
                batch_size=batch_size,
                pixel_scale=pixel_scale,
                normalize=normalize,
                output=output,
            )

        opened, self.provider_choice = acceleration.pick_provider(
            source.data, providers, bf16=compute_bf16, batch_size=batch_size, pinned=pinned
        )
        self._open(source, opened, threads, spinning, batch_size, cuda_device, bf16=compute_bf16)
        self.model_name = source.name
        self._source = source
        self._serial_session: ort.InferenceSession | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._parallel_lock = threading.Lock()
        #: Read from the model; ``output_kind`` may be "unknown" until the probe run below.
        asked = None if compute_bf16 else precision  # bf16 says itself, below, what is wrong with an int8 model
        self.contract: ModelContract = read_contract(
            self.session, source, precision=asked, pixel_scale=pixel_scale, normalize=normalize, output=output
        )
        if compute_bf16 and self.contract.precision == "int8":
            raise ModelError(
                f"{source.name}: precision bf16 is bf16 compute for an fp32 model, and this model is "
                "int8 (its metadata): use precision int8 for it, or pass the fp32 model"
            )
        #: ``"bf16"`` when OpenVINO computes in bf16 (``precision="bf16"``), else None (the model's own precision).
        self.inference_precision: str | None = "bf16" if compute_bf16 else None
        self._to_input = ModelInputConverter(self.contract)
        self.contract = probed(self.contract, self._probe_scores(), self.model_name)
        if self.session.get_providers()[0] == OPENVINO:
            try:
                acceleration.verify_openvino(self, source.data, bf16=compute_bf16, pinned=pinned)
            except MnistOnnxError as exc:
                if compute_bf16 or self.provider_choice is None:
                    raise
                acceleration.warn_fallback(self.model_name, exc)
                self._open(source, "cpu", threads, spinning, batch_size, cuda_device, bf16=False)
        self._small_calls = acceleration.SmallCalls(
            self.provider_choice, self._on_openvino, self.batch_size, lambda: pinned("cpu")
        )
        #: What looked wrong with the model at load (each also emitted as a :class:`ContractWarning`).
        self.warnings: list[str] = check_at_load(self)

    def _open(
        self,
        source: Any,
        providers: Providers,
        threads: int | None,
        spinning: bool | None,
        batch_size: int | None,
        cuda_device: int,
        *,
        bf16: bool,
    ) -> None:
        """Create the session on ``providers`` and what depends on where it runs (batch size, workers)."""
        self.session = create_session(
            source,
            providers=providers,
            threads=threads,
            spinning=spinning,
            cuda_device=cuda_device,
            openvino=OpenVINOConfig("bf16" if bf16 else "f32", threads=threads),
        )
        first = self.session.get_providers()[0]
        default = {CUDA: DEFAULT_CUDA_BATCH_SIZE, OPENVINO: DEFAULT_OPENVINO_BATCH_SIZE}.get(first, DEFAULT_BATCH_SIZE)
        self.batch_size = check_batch_size(batch_size if batch_size is not None else default)
        self._on_openvino = first == OPENVINO
        # Where IOBinding places inputs and outputs: the GPU when CUDA runs the
        # model, else None (plain session.run).  Tests set ("cpu", 0) to
        # exercise the binding code on machines without a GPU.
        self._bound_device: tuple[str, int] | None = ("cuda", cuda_device) if first == CUDA else None
        # Data-parallel CPU inference for large inputs: a second, single-threaded
        # session (created on first use) run from this many threads at once.
        # OpenVINO and CUDA parallelize one call by themselves.
        self._workers = (threads or physical_cores()) if first == CPU else 1

    # -- public API ---------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return list(self.session.get_providers())

    def provider_for(self, images: int | None, batch_size: int | None = None) -> str:
        """The execution provider a call of ``images`` images runs on (``providers[0]``, or the CPU provider for
        the small calls that ``auto`` routes there; None: a CSV, never routed), plus `` (bf16 compute)`` for
        ``precision="bf16"``; for reports."""
        if images is not None and self._small_calls.runs_on_cpu(images, batch_size):
            return CPU
        return self.providers[0] + (" (bf16 compute)" if self.inference_precision == "bf16" else "")

    @property
    def class_labels(self) -> tuple[Any, ...]:
        """The label of each probability column."""
        return self.contract.class_labels

    def predict_proba(self, images: npt.ArrayLike | pd.DataFrame, *, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities for in-memory images.

        Args:
            images: uint8 pixels 0-255, integers 0-255 of any dtype (checked),
                nested lists, or float pixels already scaled to [0, 1], shaped
                (N, 28, 28), (N, 28, 28, 1), (N, 1, 28, 28) or (N, 784); or one
                image shaped (28, 28), (28, 28, 1) or (784,).
            batch_size: Images per onnxruntime call (default: the classifier's).

        Returns:
            float32 array (N, classes), or (classes,) for one image; column j
            is ``class_labels[j]``.  When most images have bright borders (dark
            digits on light, unlike MNIST) an :class:`InvertedDigitsWarning` is emitted.

        Raises:
            MnistOnnxError: If the array is empty or has the wrong dtype,
                shape or value range, or contains NaN.
        """
        single = single_image(images)
        pixels = validated_images(np.asarray(images)[None] if single else images)
        message = inverted_message(count_bright_borders(pixels), len(pixels), "images")
        if message:
            warnings.warn(InvertedDigitsWarning(message), stacklevel=2)
        runner = self._small_calls.classifier_for(len(pixels), batch_size) or self  # see acceleration.SmallCalls
        probabilities = runner._probabilities(pixels, runner._batch_size(batch_size))
        return probabilities[0] if single else probabilities

    def predict(self, images: npt.ArrayLike | pd.DataFrame, *, batch_size: int | None = None) -> Any:
        """Predicted labels for in-memory images (see :meth:`predict_proba` for the input forms).

        Returns:
            Array (N,) of class labels (int64 for the digits 0-9), or one label for one image.
        """
        probabilities = self.predict_proba(images, batch_size=batch_size)
        labels = label_values(self.class_labels, np.atleast_2d(probabilities).argmax(axis=1))
        return labels[0] if probabilities.ndim == 1 else labels

    def predict_images(
        self, images: Any, *, invert: str | bool = "auto", preprocess: bool = True, proba: bool = False
    ) -> pd.DataFrame:
        """Predict pictures of digits (paths, bytes, PIL images, arrays of any size): see
        :func:`.image_predict.predict_images`."""
        from .image_predict import predict_images

        return predict_images(self, images, invert=invert, preprocess=preprocess, proba=proba)

    def predict_csv(
        self,
        path: PathLike,
        *,
        output: PathLike | None = None,
        proba: bool = False,
        batch_size: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        overlap_reading: bool = True,
        progress: Callable[[int], None] | None = None,
        invert: bool = False,
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
                256 raw lines, parses it (numpy, which releases the GIL) and
                predicts it with the single-threaded session, so parsing and
                inference share the cores with no thread waiting on another;
                results are put back in file order.  Elsewhere (CUDA, one
                thread) a background thread parses the next chunk while the
                current one is predicted.  With False, each chunk is parsed,
                then predicted.  Figures in ``benchmarks/levers.md``.
            progress: Called with the number of rows done after each chunk (or parallel block).
            invert: Feed 255 - pixel (for digits drawn dark on light).

        Returns:
            A DataFrame with ``ImageId`` (1-based, in file order) and ``Label``
            (plus the probability columns with ``proba``).  Its ``attrs`` hold
            ``model`` (where the model came from), ``providers``, ``rows``,
            ``seconds`` (wall time), ``images_per_second``, ``evaluation``:
            an :class:`Evaluation` (accuracy and confusion matrix) when the
            file has a label column, else None; ``warnings``: what looked
            wrong (the model's contract, digits dark on light); ``notes``: how
            the file was read (a header-less MNIST CSV).

        Raises:
            CsvFormatError: If the CSV is malformed (names the file, line and column).
            MnistOnnxError: If ``output`` cannot be written.
        """
        return csv_predict.predict_csv(
            self,
            path,
            output=output,
            proba=proba,
            batch_size=batch_size,
            chunk_rows=chunk_rows,
            overlap_reading=overlap_reading,
            progress=progress,
            invert=invert,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_name!r}, providers={self.providers}, "
            f"layout={self.contract.layout}, precision={self.inference_precision or self.contract.precision})"
        )

    # -- inference ----------------------------------------------------------

    def _batch_size(self, batch_size: int | None) -> int:
        return check_batch_size(self.batch_size if batch_size is None else batch_size)

    def _run(self, x: np.ndarray, session: ort.InferenceSession | None = None) -> np.ndarray:
        contract = self.contract
        if session is None and self._on_openvino:
            return run_padded(self.session, contract.input_name, contract.output_name, x, self.batch_size)
        if session is not None or self._bound_device is None:
            return (session or self.session).run([contract.output_name], {contract.input_name: x})[0]
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

    def _probabilities(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        n, workers = len(pixels), self._workers
        if workers < 2 or n < workers * MIN_IMAGES_PER_WORKER:
            return self._in_order(pixels, batch_size)
        session, executor = self._parallel()
        result = np.empty((n, len(self.class_labels)), dtype=np.float32)

        def score(part: slice) -> None:
            result[part] = self._scores(self._to_input(pixels[part]), session)

        for _ in executor.map(score, batch_slices(n, min(batch_size, -(-n // workers)))):  # re-raises the first failure
            pass
        return self._as_probabilities(result)

    def _in_order(self, pixels: np.ndarray, batch_size: int, session: ort.InferenceSession | None = None) -> np.ndarray:
        """Probabilities of ``pixels``, batch after batch in this thread (``session``: None for the main one)."""
        result = np.empty((len(pixels), len(self.class_labels)), dtype=np.float32)
        for part in batch_slices(len(pixels), batch_size):
            result[part] = self._scores(self._to_input(pixels[part]), session)
        return self._as_probabilities(result)

    def _as_probabilities(self, scores: np.ndarray) -> np.ndarray:
        return softmax(scores) if self.contract.output_kind == "logits" else scores

    def _probe_scores(self) -> np.ndarray:
        """The model's raw output for an all-black and an all-white image (checked by :func:`.contract.probed`)."""
        try:
            return np.asarray(self._scores(self._to_input(probe_images())))
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError(f"{self.model_name}: the model fails on a 2-image batch: {first_line(exc)}") from None


def predict_csv(
    path: PathLike,
    model: ModelInput = None,
    *,
    batch_size: int | None = None,
    providers: Providers = "auto",
    threads: int | None = None,
    precision: Precision | Literal["bf16"] | None = None,
    output: PathLike | None = None,
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
        batch_size: Images per onnxruntime call; None: 16 on the CPU, 512 on OpenVINO, 1,024 on CUDA.
        providers: ``"auto"`` (CUDA when available, else the measured faster of
            the CPU provider and OpenVINO), ``"cpu"``, ``"cuda"``, ``"openvino"``,
            or a list of onnxruntime provider names.
        threads: onnxruntime intra-op threads; None uses the measured default.
        precision: ``"fp32"`` (default) or ``"int8"``: which bundled model; ``"bf16"``: the fp32 model with
            bf16 compute on OpenVINO, behind the bf16 gate (see :class:`DigitClassifier`).
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
    classifier = DigitClassifier(
        model, providers=providers, threads=threads, precision=precision, batch_size=batch_size
    )
    return classifier.predict_csv(
        path, output=output, proba=proba, chunk_rows=chunk_rows, overlap_reading=overlap_reading, progress=progress
    )
