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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from .._fileio import atomic_path, sha256_file, write_json_atomic
from .._platform import cpu_int8_features
from ..errors import GateError, MnistOnnxError, ModelError
from ..runtime import metadata as meta
from ..runtime.kaggle_csv import iter_kaggle_csv, read_kaggle_csv
from . import graph as g
from .int8_check import MAX_ACCURACY_DROP, MIN_AGREEMENT, Int8Comparison, compare_int8, gate_failures, latency
from .parity import BUNDLED_SAMPLE, describe_path, to_model_input

__all__ = [
    "QuantOptions",
    "QuantizeResult",
    "DEFAULT_CALIBRATION_ROWS",
    "MIN_AGREEMENT",
    "MAX_ACCURACY_DROP",
    "read_calibration_images",
    "quantize_model",
    "Int8Comparison",
    "compare_int8",
    "gate_failures",
    "quantize_int8",
    "quantization_report_path",
]

DEFAULT_CALIBRATION_ROWS = 1000
_CALIBRATION_BATCH = 64
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
        return (
            f"{self.quant_format} {'per-channel' if self.per_channel else 'per-tensor'} "
            f"{self.activation_type}/{self.weight_type} {self.calibrate_method}"
            + ("" if self.preprocess else ", no pre-process")
            + ("" if self.float_output_layer else ", int8 output layer")
            + (", float first conv" if self.float_first_conv else "")
            + (", uint8 input" if self.uint8_input else "")
        )


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
            yield {self.input_name: self.x[start : start + self.batch]}

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
    dims: list[int | None] = [
        d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim
    ]
    layout = info.input_layout
    if layout is None:
        known: dict[tuple[int | None, ...], str] = {(28, 28, 1): "NHWC", (1, 28, 28): "NCHW"}
        layout = known.get(tuple(dims[1:]))
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


def quantize_model(
    model: Any, calibration_x: np.ndarray, options: QuantOptions, pixel_scale: float = 1.0 / 255.0
) -> Any:
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
            str(source),
            str(target),
            _Calibration(input_name, calibration_x),
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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b) or sha256_file(a) == sha256_file(b)
    except OSError:
        return False


@dataclass(frozen=True)
class _Fp32Source:
    """The fp32 model to quantize and the input contract its metadata (or signature) gives."""

    path: Path
    model: Any
    layout: str
    pixel_scale: float


@dataclass(frozen=True)
class _GateData:
    """Calibration images (uint8 N×28×28×1) and the labelled held-out digits the gate runs on."""

    calibration: np.ndarray
    images: np.ndarray
    labels: np.ndarray


def _load_fp32(source: Path, out: Path, min_agreement: float, max_accuracy_drop: float) -> _Fp32Source:
    """Check the destination and thresholds, then load the fp32 model and read its input contract."""
    onnx = require("onnx", "export")
    if out.suffix != ".onnx":
        raise MnistOnnxError(f"{out}: expected an output path ending in .onnx, got {out.suffix or 'no suffix'!r}")
    if not out.parent.is_dir():
        raise MnistOnnxError(f"{out}: cannot write, directory {out.parent} does not exist")
    if not 0 <= min_agreement <= 1 or max_accuracy_drop < 0:
        raise MnistOnnxError(
            f"expected 0 <= min_agreement <= 1 and max_accuracy_drop >= 0, got {min_agreement} and {max_accuracy_drop}"
        )
    if not source.is_file():
        raise ModelError(f"{source}: no such file, expected an fp32 ONNX model")
    try:
        model = onnx.load(source)
    except Exception as exc:  # protobuf's DecodeError and friends share no useful base class
        raise ModelError(f"{source}: cannot read as an ONNX model ({type(exc).__name__}: {exc})") from None
    if meta.parse_metadata(g.get_metadata(model)).precision == "int8":
        raise ModelError(f"{source}: expected an fp32 model, got one whose metadata says int8")
    _, layout, pixel_scale = _input_contract(model, str(source))
    return _Fp32Source(source, model, layout, pixel_scale)


def _read_gate_data(calibration: Path, evaluation: Path, rows: int, emit: Callable[[str], None]) -> _GateData:
    """Read the calibration rows and the held-out rows, refusing any image the two share."""
    if calibration.exists() and evaluation.exists() and _same_file(calibration, evaluation):
        raise MnistOnnxError(
            f"calibration file {calibration} and evaluation file {evaluation} are the same; "
            f"evaluate on held-out rows the calibration never saw"
        )
    emit(f"reading {rows:,} calibration rows from {calibration}")
    calib_images = read_calibration_images(calibration, rows)
    held_out = read_kaggle_csv(evaluation, require_labels=True)
    calib_keys = {img.tobytes() for img in calib_images}
    shared = sum(img.tobytes() in calib_keys for img in held_out.images)
    if shared:
        raise MnistOnnxError(
            f"{shared:,} of the {len(held_out):,} evaluation images in {evaluation} are also "
            f"among the calibration images of {calibration}; evaluate on held-out rows"
        )
    if held_out.labels is None:  # unreachable: require_labels=True already checked the header
        raise MnistOnnxError(f"{evaluation}: has no label column")
    return _GateData(calib_images, held_out.images, held_out.labels.astype(np.int64))


def _quantize_checked(source: _Fp32Source, data: _GateData, options: QuantOptions) -> tuple[Any, float]:
    """Quantize, then run onnx.checker's full check; returns the int8 model and the seconds it took."""
    onnx = require("onnx", "export")
    started = time.perf_counter()
    calibration_x = to_model_input(data.calibration, source.layout, source.pixel_scale)
    int8_model = quantize_model(source.model, calibration_x, options, source.pixel_scale)
    seconds = time.perf_counter() - started
    try:
        onnx.checker.check_model(int8_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GateError(f"the int8 model of {source.path} fails onnx.checker (full check): {exc}") from None
    return int8_model, seconds


def _write_int8(int8_model: Any, fp32_model: Any, out: Path, report: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """Write the int8 model (fp32 metadata + precision + report) and its report; returns the report path."""
    entries = g.get_metadata(fp32_model)
    entries.update({meta.KEY_PRECISION: "int8", meta.KEY_QUANTIZATION: json.dumps(report, sort_keys=True)})
    del int8_model.metadata_props[:]
    g.set_metadata(int8_model, entries)
    with atomic_path(out, suffix=".onnx") as tmp:
        tmp.write_bytes(int8_model.SerializeToString())
    report_path = quantization_report_path(out)
    write_json_atomic(report_path, report)
    return report_path, g.get_metadata(int8_model)


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
    options = options or QuantOptions()
    options.validate()
    emit = progress or (lambda _msg: None)
    out, calibration = Path(out_path), Path(calibration_csv)
    evaluation = Path(evaluation_csv) if evaluation_csv is not None else BUNDLED_SAMPLE
    source = _load_fp32(Path(onnx_path), out, min_agreement, max_accuracy_drop)
    data = _read_gate_data(calibration, evaluation, calibration_rows, emit)

    emit(f"quantizing ({options.label()})")
    int8_model, quantize_s = _quantize_checked(source, data, options)

    emit(f"accuracy gate on {len(data.images):,} held-out digits from {describe_path(evaluation)}")
    fp32_bytes, int8_bytes = source.model.SerializeToString(), int8_model.SerializeToString()
    x_eval = to_model_input(data.images, source.layout, source.pixel_scale)
    x_int8 = to_model_input(data.images, source.layout, None) if options.uint8_input else x_eval
    comparison = compare_int8(fp32_bytes, int8_bytes, x_eval, data.labels, int8_x=x_int8)
    failures = gate_failures(comparison, min_agreement, max_accuracy_drop)
    if failures:
        raise GateError(
            f"the int8 model of {source.path} ({options.label()}) fails the accuracy gate on "
            f"{describe_path(evaluation)}: " + "; ".join(failures)
        )

    report: dict[str, Any] = {
        "passed": True,
        "options": asdict(options),
        "source_onnx": str(source.path),
        "source_onnx_sha256": sha256_file(source.path),
        "calibration": {
            "csv": describe_path(calibration),
            "sha256": sha256_file(calibration),
            "rows": int(len(data.calibration)),
            "which_rows": f"the first {len(data.calibration):,} data rows",
        },
        "evaluation": {"csv": describe_path(evaluation), "sha256": sha256_file(evaluation), **comparison.figures()},
        "thresholds": {"min_agreement": min_agreement, "max_accuracy_drop_pp": max_accuracy_drop * 100},
        "quantize_seconds": round(quantize_s, 1),
        "ops": g.op_counts(int8_model),
        "cpu": cpu_int8_features(),
    }
    if measure_speed:
        emit("timing fp32 and int8 with onnxruntime")
        report["latency"] = {"fp32": latency(fp32_bytes, x_eval), "int8": latency(int8_bytes, x_int8)}

    report_path, metadata = _write_int8(int8_model, source.model, out, report)
    emit(
        f"wrote {out}: accuracy {comparison.int8_accuracy:.2%} (fp32 {comparison.fp32_accuracy:.2%}), "
        f"agreement {comparison.agreement:.2%} on {comparison.rows:,} held-out digits; report {report_path}"
    )
    return QuantizeResult(out, report_path, report, metadata)
