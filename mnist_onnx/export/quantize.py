"""Static int8 quantization with onnxruntime's tools, behind an accuracy gate.

The model is calibrated on the first rows of a Kaggle *training* CSV (never on
the rows it is evaluated on), quantized with ``onnxruntime.quantization``,
and kept only if, on held-out real digits, it predicts the same digit as the
fp32 model on at least 99.8% of them and its accuracy is at most 0.1
percentage points lower.

The default options were picked by measurement (``benchmarks/quantize_options.py``,
tables in ``benchmarks/quantize_options.md``; AMD EPYC with AVX-512 VNNI and
AVX-VNNI, no AMX; onnxruntime 1.32 CPU; the full-data augmented model): QDQ
format, per-channel s8 weights, u8 activations, MinMax calibration, output
layer in float.  u8 activations × s8 weights is what VNNI computes directly:
about 2× the fp32 throughput at batch 512 and 3-4× at batch 1; u8/u8 gains
nothing and s8 activations in QOperator format run 7-12× slower than fp32
at batch 512.
All options agree with fp32 on at least 99.95% of 8,206 validation digits;
calibration methods made no difference beyond 2 images.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .._extras import require
from .._platform import cpu_int8_features
from .._fileio import atomic_path, sha256_file, write_json_atomic
from ..errors import GateError, MnistOnnxError, ModelError
from ..runtime import metadata as meta
from ..runtime.kaggle_csv import iter_kaggle_csv, read_kaggle_csv
from . import graph as g
from .parity import BUNDLED_SAMPLE, describe_path, run_onnxruntime, to_model_input

__all__ = [
    "QuantOptions",
    "QuantizeResult",
    "DEFAULT_CALIBRATION_ROWS",
    "MIN_AGREEMENT",
    "MAX_ACCURACY_DROP",
    "read_calibration_images",
    "quantize_model",
    "compare_int8",
    "gate_failures",
    "quantize_int8",
    "quantization_report_path",
]

DEFAULT_CALIBRATION_ROWS = 1000
#: Share of held-out digits on which int8 must predict the same digit as fp32.
MIN_AGREEMENT = 0.998
#: Largest allowed accuracy loss of int8 against fp32 (0.1 percentage points).
MAX_ACCURACY_DROP = 0.001
_CALIBRATION_BATCH = 64
_EVAL_BATCH = 512
_TYPES = {"u8": "QUInt8", "s8": "QInt8"}
_FORMATS = ("QDQ", "QOperator")
_METHODS = ("MinMax", "Entropy", "Percentile")


@dataclass(frozen=True)
class QuantOptions:
    """The onnxruntime quantization options that matter for this network.

    Attributes:
        quant_format: ``"QDQ"`` (QuantizeLinear/DequantizeLinear pairs that
            onnxruntime fuses into int8 kernels) or ``"QOperator"`` (QLinearConv,
            QLinearMatMul, ... written out).
        per_channel: One scale per output channel of each weight tensor.
        activation_type: ``"u8"`` or ``"s8"``.
        weight_type: ``"u8"`` or ``"s8"``.
        calibrate_method: ``"MinMax"``, ``"Entropy"`` or ``"Percentile"``.
        preprocess: Run ``onnxruntime.quantization.quant_pre_process`` (shape
            inference and graph optimization) before quantizing.
        float_output_layer: Keep the output Dense layer and its Softmax in
            float (1,290 of the network's 42 million multiply-adds).  Quantized,
            the logits come out in steps of about 0.1 and the probabilities in
            steps of 1/255, which flips the predicted digit of low-margin images
            and makes near classes tie.
        float_first_conv: Keep the first convolution in float (1.5% of the
            network's multiply-adds).  With one input channel, onnxruntime's
            int8 convolution is an im2col of 25 values a pixel plus a
            requantization of 784×32 outputs: 17.5% of the int8 model's time
            for 1.5% of its work.  In float it is cheaper.
        uint8_input: The model takes raw uint8 pixels (0-255) and scales them
            itself (one ``DequantizeLinear``), so the runtime hands the CSV's
            bytes over without converting them to float.
    """

    quant_format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "u8"
    weight_type: str = "s8"
    calibrate_method: str = "MinMax"
    preprocess: bool = True
    float_output_layer: bool = True
    float_first_conv: bool = True
    uint8_input: bool = True

    def validate(self) -> None:
        """Raise :class:`MnistOnnxError` naming the first bad field."""
        checks = [
            ("quant_format", self.quant_format, _FORMATS),
            ("activation_type", self.activation_type, tuple(_TYPES)),
            ("weight_type", self.weight_type, tuple(_TYPES)),
            ("calibrate_method", self.calibrate_method, _METHODS),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise MnistOnnxError(f"expected {name} one of {', '.join(allowed)}, got {value!r}")

    def label(self) -> str:
        """A short description, e.g. ``QDQ per-channel u8/s8 MinMax``.

        >>> QuantOptions("QDQ", False, "u8", "s8", "Entropy").label()
        'QDQ per-tensor u8/s8 Entropy, float first conv, uint8 input'
        >>> QuantOptions(float_first_conv=False, uint8_input=False).label()
        'QDQ per-channel u8/s8 MinMax'
        """
        return (f"{self.quant_format} {'per-channel' if self.per_channel else 'per-tensor'} "
                f"{self.activation_type}/{self.weight_type} {self.calibrate_method}"
                + ("" if self.preprocess else ", no pre-process")
                + ("" if self.float_output_layer else ", int8 output layer")
                + (", float first conv" if self.float_first_conv else "")
                + (", uint8 input" if self.uint8_input else ""))


@dataclass
class QuantizeResult:
    """What :func:`quantize_int8` wrote and measured."""

    onnx_path: Path
    report_path: Path
    report: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)


def quantization_report_path(onnx_path: str | os.PathLike[str]) -> Path:
    """Where the report of ``onnx_path`` goes: ``<onnx_path>.quantization.json``.

    >>> quantization_report_path("digit_cnn.int8.onnx").as_posix()
    'digit_cnn.int8.onnx.quantization.json'
    """
    return Path(str(onnx_path) + ".quantization.json")


def read_calibration_images(csv: str | os.PathLike[str], rows: int) -> np.ndarray:
    """The first ``rows`` images of a Kaggle train-format CSV (uint8, N×28×28×1).

    Raises:
        CsvFormatError: If the file is malformed or has no ``label`` column.
        MnistOnnxError: If ``rows`` is not positive.
    """
    if rows < 1:
        raise MnistOnnxError(f"expected a positive number of calibration rows, got {rows}")
    chunks, taken = [], 0
    for batch in iter_kaggle_csv(csv, chunk_rows=min(rows, 4096), require_labels=True):
        chunks.append(batch.images[: rows - taken])
        taken += len(chunks[-1])
        if taken >= rows:
            break
    return np.concatenate(chunks)


def _calibration_batch(rows: int, largest: int = _CALIBRATION_BATCH) -> int:
    """The largest batch size up to ``largest`` that divides ``rows``.

    onnxruntime's histogram calibrators (Entropy, Percentile) stack the
    outputs of all batches into one array, which fails on a ragged last batch.

    >>> _calibration_batch(1000), _calibration_batch(128), _calibration_batch(997)
    (50, 64, 1)
    """
    return next(b for b in range(min(largest, rows), 0, -1) if rows % b == 0)


class _Calibration:
    """A ``CalibrationDataReader`` over float model inputs, in equal batches."""

    def __init__(self, input_name: str, x: np.ndarray):
        self.input_name, self.x = input_name, x
        self.batch = _calibration_batch(len(x))
        self._batches: Iterator[dict[str, np.ndarray]] = self._iter()

    def _iter(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.x), self.batch):
            yield {self.input_name: self.x[start:start + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._iter()


def _input_contract(model: Any, name: str) -> tuple[str, str, float]:
    """(input name, layout, pixel scale) from the model's metadata, else from its input shape."""
    info = meta.parse_metadata(g.get_metadata(model))
    if len(model.graph.input) != 1:
        raise ModelError(f"{name}: expected a model with 1 input, got {len(model.graph.input)}")
    graph_input = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    layout = info.input_layout
    if layout is None:
        layout = {(28, 28, 1): "NHWC", (1, 28, 28): "NCHW"}.get(tuple(dims[1:]))
        if layout is None:
            raise ModelError(f"{name}: expected input shape N×28×28×1 or N×1×28×28, got {dims}")
    return graph_input.name, layout, info.pixel_scale or 1.0 / 255.0


def _output_layer_nodes(model: Any) -> list[str]:
    """Names of the final Softmax and the Dense layer feeding it (Gemm, or MatMul then Add)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    names = []
    for softmax in (n for n in model.graph.node if n.op_type == "Softmax"):
        names.append(softmax.name)
        node = producers.get(softmax.input[0])
        if node is not None and node.op_type == "Add":
            names.append(node.name)
            node = next((producers[i] for i in node.input if i in producers), None)
        if node is not None and node.op_type in ("MatMul", "Gemm"):
            names.append(node.name)
    return names


def quantize_model(model: Any, calibration_x: np.ndarray, options: QuantOptions,
                   pixel_scale: float = 1.0 / 255.0) -> Any:
    """Quantize an ``onnx.ModelProto`` statically (no gate); returns the int8 ``onnx.ModelProto``.

    Args:
        model: The fp32 model.
        calibration_x: Calibration inputs, float32, already in the model's layout and scale.
        options: See :class:`QuantOptions`.
        pixel_scale: What the fp32 model's input is in uint8 pixels (used with ``options.uint8_input``).
    """
    onnx = require("onnx", "export")
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options.validate()
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="mnist-onnx-quantize-") as tmp:
        source = Path(tmp) / "fp32.onnx"
        onnx.save(model, source)
        if options.preprocess:
            prepared = Path(tmp) / "fp32.prepared.onnx"
            # onnx's own shape inference types every tensor of this network (only the batch
            # is symbolic); onnxruntime's symbolic pass would add a sympy dependency and, checked
            # on the bundled model, yields the same graph.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            source = prepared
        target = Path(tmp) / "int8.onnx"
        prepared_model = onnx.load(source)
        keep_float = _output_layer_nodes(prepared_model) if options.float_output_layer else []
        if options.float_first_conv:
            conv = g.first_conv(prepared_model)
            if conv is None:
                raise ModelError("float_first_conv: the model has no Conv node fed by its input")
            keep_float.append(conv.name)
        q.quantize_static(
            str(source), str(target), _Calibration(input_name, calibration_x),
            quant_format=getattr(q.QuantFormat, options.quant_format),
            per_channel=options.per_channel,
            activation_type=getattr(q.QuantType, _TYPES[options.activation_type]),
            weight_type=getattr(q.QuantType, _TYPES[options.weight_type]),
            calibrate_method=getattr(q.CalibrationMethod, options.calibrate_method),
            nodes_to_exclude=keep_float or None,
        )
        int8_model = onnx.load(target)
    if options.uint8_input:
        g.take_uint8_input(int8_model, pixel_scale)
    return int8_model


def compare_int8(
    fp32_bytes: bytes, int8_bytes: bytes, x: np.ndarray, labels: np.ndarray, batch_size: int = _EVAL_BATCH,
    *, int8_x: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy of both models and their agreement on inputs ``x`` (model layout and scale).

    ``int8_x`` is the int8 model's input when it differs from ``x`` (the raw
    uint8 pixels of a model made with ``uint8_input``).
    """
    fp32 = run_onnxruntime(fp32_bytes, x, batch_size).argmax(axis=1)
    int8 = run_onnxruntime(int8_bytes, x if int8_x is None else int8_x, batch_size).argmax(axis=1)
    n = len(labels)
    fp32_correct, int8_correct = int((fp32 == labels).sum()), int((int8 == labels).sum())
    agree = int((fp32 == int8).sum())
    return {
        "rows": n,
        "fp32_accuracy": fp32_correct / n,
        "int8_accuracy": int8_correct / n,
        "accuracy_drop_pp": (fp32_correct - int8_correct) / n * 100,
        "agreement": agree / n,
        "disagreements": n - agree,
        "fp32_correct": fp32_correct,
        "int8_correct": int8_correct,
        "_changed_rows": np.flatnonzero(fp32 != int8),
    }


def gate_failures(
    figures: dict[str, Any], changed_rows: np.ndarray, min_agreement: float, max_accuracy_drop: float
) -> list[str]:
    """The accuracy gate's verdict on :func:`compare_int8` figures: one sentence per failed condition.

    Counted in images, so on 1,000 digits 99.8% agreement allows 2 changed
    predictions and a 0.1 pp drop allows 1 more error.

    >>> figures = {"rows": 1000, "fp32_correct": 990, "int8_correct": 989, "disagreements": 2,
    ...            "agreement": 0.998, "fp32_accuracy": 0.99, "int8_accuracy": 0.989, "accuracy_drop_pp": 0.1}
    >>> gate_failures(figures, np.array([5, 9]), 0.998, 0.001)
    []
    >>> len(gate_failures(figures, np.array([5, 9]), 0.999, 0.0))
    2
    """
    n = figures["rows"]
    failures = []
    if n - figures["disagreements"] < min_agreement * n - 1e-9:
        rows = ", ".join(str(r) for r in changed_rows[:10])
        failures.append(f"int8 and fp32 agree on {figures['agreement']:.2%} of {n:,} digits "
                        f"({figures['disagreements']} differ, rows {rows}{', ...' if len(changed_rows) > 10 else ''}), "
                        f"expected at least {min_agreement:.2%}")
    if figures["fp32_correct"] - figures["int8_correct"] > max_accuracy_drop * n + 1e-9:
        failures.append(f"accuracy drops {figures['accuracy_drop_pp']:.2f} pp "
                        f"({figures['fp32_accuracy']:.2%} → {figures['int8_accuracy']:.2%}), "
                        f"expected at most {max_accuracy_drop * 100:.2f} pp")
    return failures


def _latency(model_bytes: bytes, x: np.ndarray) -> dict[str, float]:
    """Best-of-3 onnxruntime latency at batch 1 (ms) and per image at batch 512 (µs)."""
    from ..runtime.session import create_session

    session = create_session(model_bytes, providers="cpu")
    name = session.get_inputs()[0].name
    one, big = x[:1], np.resize(x, (512, *x.shape[1:]))
    session.run(None, {name: big})
    best1 = best512 = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(20):
            session.run(None, {name: one})
        best1 = min(best1, (time.perf_counter() - start) / 20)
        start = time.perf_counter()
        session.run(None, {name: big})
        best512 = min(best512, time.perf_counter() - start)
    return {"batch_1_ms": round(best1 * 1e3, 3), "batch_512_per_image_us": round(best512 / 512 * 1e6, 1)}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b) or sha256_file(a) == sha256_file(b)
    except OSError:
        return False


def quantize_int8(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    calibration_csv: str | os.PathLike[str],
    evaluation_csv: str | os.PathLike[str] | None = None,
    calibration_rows: int = DEFAULT_CALIBRATION_ROWS,
    options: QuantOptions | None = None,
    min_agreement: float = MIN_AGREEMENT,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    measure_speed: bool = True,
    progress: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize an fp32 ONNX digit classifier to int8, keeping it only if it passes the accuracy gate.

    Writes ``out_path`` and ``<out_path>.quantization.json`` atomically, and
    only after the gate passed; on any failure nothing is written.

    Args:
        onnx_path: The fp32 model (as written by :func:`mnist_onnx.export.export_onnx`).
        out_path: The int8 ``.onnx`` file to write.
        calibration_csv: Kaggle train.csv; its first ``calibration_rows`` images calibrate.
        evaluation_csv: Kaggle CSV with labels, held out from calibration, for the
            gate; None uses the bundled sample of 1,000 real held-out digits.
        calibration_rows: How many training images calibrate.
        options: Quantization options; None uses the measured defaults.
        min_agreement: Least share of evaluation digits on which int8 and fp32 agree.
        max_accuracy_drop: Largest allowed accuracy loss (a fraction: 0.001 = 0.1 pp).
        measure_speed: Time both models (about a second) and record it.
        progress: Called with one line per stage.

    Returns:
        A :class:`QuantizeResult`.

    Raises:
        GateError: If the int8 model fails the accuracy gate (nothing is written).
        ModelError: If the fp32 model cannot be read.
        CsvFormatError: If a CSV is malformed or lacks labels.
        MnistOnnxError: On bad options, overlapping calibration and evaluation
            data, or an unwritable destination.
    """
    onnx = require("onnx", "export")
    options = options or QuantOptions()
    options.validate()
    emit = progress or (lambda _msg: None)
    source, out = Path(onnx_path), Path(out_path)
    evaluation = Path(evaluation_csv) if evaluation_csv is not None else BUNDLED_SAMPLE
    calibration = Path(calibration_csv)
    if out.suffix != ".onnx":
        raise MnistOnnxError(f"{out}: expected an output path ending in .onnx, got {out.suffix or 'no suffix'!r}")
    if not out.parent.is_dir():
        raise MnistOnnxError(f"{out}: cannot write, directory {out.parent} does not exist")
    if not 0 <= min_agreement <= 1 or max_accuracy_drop < 0:
        raise MnistOnnxError(f"expected 0 <= min_agreement <= 1 and max_accuracy_drop >= 0, "
                             f"got {min_agreement} and {max_accuracy_drop}")
    if not source.is_file():
        raise ModelError(f"{source}: no such file, expected an fp32 ONNX model")
    try:
        model = onnx.load(source)
    except Exception as exc:  # protobuf's DecodeError and friends share no useful base class
        raise ModelError(f"{source}: cannot read as an ONNX model ({type(exc).__name__}: {exc})") from None
    if meta.parse_metadata(g.get_metadata(model)).precision == "int8":
        raise ModelError(f"{source}: expected an fp32 model, got one whose metadata says int8")
    input_name, layout, pixel_scale = _input_contract(model, str(source))
    if calibration.exists() and evaluation.exists() and _same_file(calibration, evaluation):
        raise MnistOnnxError(f"calibration file {calibration} and evaluation file {evaluation} are the same; "
                             f"evaluate on held-out rows the calibration never saw")

    emit(f"reading {calibration_rows:,} calibration rows from {calibration}")
    calib_images = read_calibration_images(calibration, calibration_rows)
    held_out = read_kaggle_csv(evaluation, require_labels=True)
    calib_keys = {img.tobytes() for img in calib_images}
    shared = sum(img.tobytes() in calib_keys for img in held_out.images)
    if shared:
        raise MnistOnnxError(f"{shared:,} of the {len(held_out):,} evaluation images in {evaluation} are also "
                             f"among the calibration images of {calibration}; evaluate on held-out rows")

    emit(f"quantizing ({options.label()})")
    started = time.perf_counter()
    int8_model = quantize_model(model, to_model_input(calib_images, layout, pixel_scale), options, pixel_scale)
    quantize_s = time.perf_counter() - started
    try:
        onnx.checker.check_model(int8_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GateError(f"the int8 model of {source} fails onnx.checker (full check): {exc}") from None

    emit(f"accuracy gate on {len(held_out):,} held-out digits from {describe_path(evaluation)}")
    fp32_bytes = model.SerializeToString()
    x_eval = to_model_input(held_out.images, layout, pixel_scale)
    labels = held_out.labels.astype(np.int64)  # type: ignore[union-attr]  # require_labels=True
    x_int8 = to_model_input(held_out.images, layout, None) if options.uint8_input else x_eval
    figures = compare_int8(fp32_bytes, int8_model.SerializeToString(), x_eval, labels, int8_x=x_int8)
    changed = figures.pop("_changed_rows")
    failures = gate_failures(figures, changed, min_agreement, max_accuracy_drop)
    if failures:
        raise GateError(f"the int8 model of {source} ({options.label()}) fails the accuracy gate on "
                        f"{describe_path(evaluation)}: " + "; ".join(failures))
    n = figures["rows"]

    report: dict[str, Any] = {
        "passed": True,
        "options": asdict(options),
        "source_onnx": str(source),
        "source_onnx_sha256": sha256_file(source),
        "calibration": {"csv": str(calibration), "sha256": sha256_file(calibration), "rows": int(len(calib_images)),
                        "which_rows": f"the first {len(calib_images):,} data rows"},
        "evaluation": {"csv": describe_path(evaluation), "sha256": sha256_file(evaluation), **figures},
        "thresholds": {"min_agreement": min_agreement, "max_accuracy_drop_pp": max_accuracy_drop * 100},
        "quantize_seconds": round(quantize_s, 1),
        "ops": g.op_counts(int8_model),
        "cpu": cpu_int8_features(),
    }
    int8_bytes_for_timing = int8_model.SerializeToString()
    if measure_speed:
        emit("timing fp32 and int8 with onnxruntime")
        report["latency"] = {"fp32": _latency(fp32_bytes, x_eval), "int8": _latency(int8_bytes_for_timing, x_int8)}

    entries = g.get_metadata(model)
    entries.update({
        meta.KEY_PRECISION: "int8",
        meta.KEY_QUANTIZATION: json.dumps(report, sort_keys=True),
    })
    del int8_model.metadata_props[:]
    g.set_metadata(int8_model, entries)
    with atomic_path(out, suffix=".onnx") as tmp:
        tmp.write_bytes(int8_model.SerializeToString())
    report_path = quantization_report_path(out)
    write_json_atomic(report_path, report)
    emit(f"wrote {out}: accuracy {figures['int8_accuracy']:.2%} (fp32 {figures['fp32_accuracy']:.2%}), "
         f"agreement {figures['agreement']:.2%} on {n:,} held-out digits; report {report_path}")
    return QuantizeResult(out, report_path, report, g.get_metadata(int8_model))
