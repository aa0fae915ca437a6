"""Keras → ONNX with tf2onnx, graph cleanup, self-describing metadata and the parity gate.

Conversion goes through ``tf2onnx.convert.from_function`` over a
``tf.function`` with an explicit ``[None, 28, 28, 1]`` signature:
``from_keras`` fails on Keras 3 models (tf2onnx issue #2448), and the opset is
always passed explicitly (tf2onnx's default is not what its docstring says).

Graph cleanup (:mod:`mnist_onnx.export.graph`): the model takes N×1×28×28
(NCHW) input, the NCHW→NHWC transpose before the first Dense layer is folded
into that layer's weights, and the run-time reshape chain becomes one
``Flatten`` (20 nodes → 12).  Measured with ``python
benchmarks/experiments/export_graph_cleanup.py MODEL.keras`` (the ``augmented``
recipe's model) on the 2-core development machine (AMD EPYC, onnxruntime 1.32 CPU, default session
options) while a training run kept both cores busy, so the end-to-end figures
are noisy (best of 7 interleaved rounds; two runs shown as run 1 / run 2):

=====================  ===============  ====================
graph                  batch 1 (µs)     batch 512 (µs/image)
=====================  ===============  ====================
raw tf2onnx, NHWC      919 / 1259       410 / 636
raw tf2onnx, NCHW      886 / 1418       402 / 635
cleaned, NHWC          845 / 1310       393 / 549
cleaned, NCHW          887 / 1488       389 / 578
=====================  ===============  ====================

The noise-free view is onnxruntime's profiler at batch 512: the two Conv
layers take 88-92% of the kernel time whatever the graph; the transpose
before Flatten, which onnxruntime turns into a ``ReorderOutput`` from its
blocked NCHWc layout to NHWC, takes 3.2% in the raw graph, and the plain
NCHWc→NCHW reorder that replaces it 0.6%; the Shape/Gather/Slice/Concat
chain takes under 0.01%.  So the cleanup saves about 2.5% of the compute,
and the layout of the input does not matter measurably (for one channel it
is a reshape); NCHW is kept because it is what onnxruntime computes in.
All four graphs differ from Keras by at most 4.2e-7 on the bundled digits.
The rewritten graph passes the same parity gate as the raw one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._extras import require
from .._fileio import atomic_path, sha256_file, write_json_atomic
from .._platform import library_versions
from ..errors import MnistOnnxError, ModelError
from ..runtime import metadata as meta
from . import graph as g
from .parity import DEFAULT_ATOL, DEFAULT_BATCH_SIZES, DEFAULT_VALIDATION_ROWS, check_parity, load_parity_images

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PIXEL_SCALE",
    "CLASS_LABELS",
    "ExportResult",
    "load_keras_model",
    "convert_keras",
    "export_onnx",
    "parity_report_path",
]

DEFAULT_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
#: The tutorial scales pixels by 1/255 outside the network (mnist_onnx.train.model).
PIXEL_SCALE = 1.0 / 255.0
CLASS_LABELS = [str(digit) for digit in range(10)]
_MIN_OPSET = 13  # Softmax over the last axis only from opset 13 on
_IMAGE_SHAPE = (28, 28, 1)
_TRAINING_KEYS = (
    "recipe",
    "command_line",
    "train_csv_sha256",
    "rows_used",
    "train_rows",
    "validation_rows",
    "epochs_run",
    "kept_epoch",
    "kept_val_accuracy",
    "best_val_accuracy",
    "final_val_accuracy",
    "holdout_rows",
    "holdout_accuracy",
    "wall_time_s",
)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        onnx_path: The exported model.
        parity_path: The parity report (JSON) beside it.
        parity: The parity figures (also in the model's metadata).
        metadata: The model's ``metadata_props``.
        rewrites: The graph rewrites applied after conversion.
    """

    onnx_path: Path
    parity_path: Path
    parity: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    rewrites: list[str] = field(default_factory=list)


def parity_report_path(onnx_path: str | os.PathLike[str]) -> Path:
    """Where the parity report of ``onnx_path`` goes: ``<onnx_path>.parity.json``.

    >>> parity_report_path("models/digit_cnn.onnx").as_posix()
    'models/digit_cnn.onnx.parity.json'
    """
    return Path(str(onnx_path) + ".parity.json")


def load_keras_model(path: str | os.PathLike[str]) -> Any:
    """Load a ``.keras`` model, with a :class:`ModelError` that names the file on failure."""
    keras = require("keras", "export")
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "no such file"
        raise ModelError(f"{p}: {what}, expected a Keras model file (.keras)")
    try:
        return keras.models.load_model(p, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ModelError(f"{p}: cannot load as a Keras model ({type(exc).__name__}: {exc})") from None


def _check_signature(model: Any, name: str) -> None:
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        raise ModelError(f"{name}: expected a built Keras model, got {type(model).__name__}") from None
    if len(inputs) != 1 or tuple(inputs[0].shape) != (None, *_IMAGE_SHAPE):
        shapes = ", ".join(str(tuple(i.shape)) for i in inputs)
        raise ModelError(f"{name}: expected one input of shape (None, 28, 28, 1), got {shapes}")
    if len(outputs) != 1 or tuple(outputs[0].shape) != (None, len(CLASS_LABELS)):
        shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
        raise ModelError(f"{name}: expected one output of shape (None, {len(CLASS_LABELS)}), got {shapes}")


def _check_opset(opset: int) -> None:
    tf2onnx = require("tf2onnx", "export")
    highest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    if not isinstance(opset, int) or not _MIN_OPSET <= opset <= highest:
        raise MnistOnnxError(
            f"expected an opset from {_MIN_OPSET} to {highest} "
            f"(tf2onnx {tf2onnx.__version__} supports at most {highest}), got {opset!r}"
        )


def convert_keras(
    keras_model: Any, *, opset: int = DEFAULT_OPSET, layout: str = "NCHW", optimize: bool = True
) -> tuple[Any, list[str]]:
    """Convert a Keras digit classifier to an ``onnx.ModelProto`` (no gate, no metadata).

    Args:
        keras_model: A Keras model taking (None, 28, 28, 1) float32 and returning (None, 10).
        opset: ONNX opset to convert to (13 to 18).
        layout: ``"NCHW"`` (input N×1×28×28) or ``"NHWC"`` (input N×28×28×1).
        optimize: Apply the graph rewrites of :mod:`mnist_onnx.export.graph`.

    Returns:
        The model and the names of the rewrites that were applied.

    Raises:
        ModelError: If the model has the wrong signature or tf2onnx cannot convert it.
        MnistOnnxError: On a bad opset or layout.
    """
    if layout not in meta.LAYOUTS:
        raise MnistOnnxError(f"expected layout NCHW or NHWC, got {layout!r}")
    _check_opset(opset)
    _check_signature(keras_model, getattr(keras_model, "name", "the Keras model"))
    tf = require("tensorflow", "export")
    tf2onnx = require("tf2onnx", "export")

    spec = tf.TensorSpec([None, *_IMAGE_SHAPE], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def forward(image: Any) -> Any:
        return keras_model(image, training=False)

    try:
        model, _ = tf2onnx.convert.from_function(
            forward,
            input_signature=[spec],
            opset=opset,
            inputs_as_nchw=[f"{INPUT_NAME}:0"] if layout == "NCHW" else None,
        )
    except Exception as exc:  # tf2onnx raises anything from KeyError to RuntimeError
        raise ModelError(
            f"tf2onnx {tf2onnx.__version__} cannot convert the model: {type(exc).__name__}: {exc}"
        ) from exc
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ModelError(
            f"expected the converted graph to have 1 input and 1 output, got "
            f"{len(model.graph.input)} and {len(model.graph.output)}"
        )
    g.rename_value(model, model.graph.input[0].name, INPUT_NAME)
    g.rename_value(model, model.graph.output[0].name, OUTPUT_NAME)
    g.set_batch_dim_name(model, "N")
    rewrites = []
    if optimize:
        if layout == "NCHW" and g.drop_identity_reshape(model):
            rewrites.append("input is NCHW N×1×28×28: removed the reshape to the shape it already has")
        if g.fold_flatten_transpose(model):
            rewrites.append(
                "NCHW→NHWC transpose before Flatten folded into the first Dense layer's weight rows; "
                "run-time Shape/Gather/Slice/Concat reshape chain replaced by Flatten(axis=1)"
            )
    g.remove_dead_nodes(model)
    # tf2onnx declares the ai.onnx.ml domain although no node uses it.
    used_domains = {node.domain for node in model.graph.node}
    for entry in list(model.opset_import):
        if entry.domain not in ("", "ai.onnx") and entry.domain not in used_domains:
            model.opset_import.remove(entry)
    model.doc_string = "Kaggle Digit Recognizer CNN exported by mnist-onnx"
    return model, rewrites


def _training_summary(source: Path, source_sha256: str) -> dict[str, Any] | None:
    report_path = source.parent / "report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("model_sha256") != source_sha256:
        return None  # a report of some other model file
    return {key: report[key] for key in _TRAINING_KEYS if key in report}


def export_onnx(
    keras_model: Any,
    out_path: str | os.PathLike[str],
    *,
    validation_csv: str | os.PathLike[str] | None = None,
    validation_rows: int = DEFAULT_VALIDATION_ROWS,
    opset: int = DEFAULT_OPSET,
    layout: str = "NCHW",
    optimize: bool = True,
    atol: float = DEFAULT_ATOL,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a Keras digit classifier to ONNX, keeping it only if it passes the parity gate.

    Writes ``out_path`` and ``<out_path>.parity.json``, both atomically and only
    after the gate passed; on any failure nothing is written.

    Args:
        keras_model: A path to a ``.keras`` file or a loaded Keras model.  For a
            path, its sha256 goes into the metadata, and so does the training
            recipe and accuracy from a ``report.json`` beside it that describes
            that same file.
        out_path: The ``.onnx`` file to write.
        validation_csv: Kaggle CSV (train or test format) whose first
            ``validation_rows`` rows (at least 1,000) the gate runs; None uses
            the bundled sample of 1,000 real held-out digits.
        validation_rows: Rows to take from ``validation_csv``.
        opset: ONNX opset (13 to 18).
        layout: Input layout of the ONNX model, ``"NCHW"`` (default, measured
            faster) or ``"NHWC"``.
        optimize: Apply the graph cleanup (see module docstring).
        atol: Parity tolerance on probabilities.
        batch_sizes: onnxruntime batch sizes the gate runs.
        progress: Called with one line per stage.

    Returns:
        An :class:`ExportResult`.

    Raises:
        GateError: If the model fails the parity gate (nothing is written).
        ModelError: If the Keras model cannot be loaded or converted.
        CsvFormatError: If the validation CSV is malformed.
        MnistOnnxError: On bad options or an unwritable destination.
        MissingExtraError: If TensorFlow, tf2onnx or onnx is missing.
    """
    emit = progress or (lambda _msg: None)
    out = Path(out_path)
    if out.suffix != ".onnx":
        raise MnistOnnxError(f"{out}: expected an output path ending in .onnx, got {out.suffix or 'no suffix'!r}")
    if not out.parent.is_dir():
        raise MnistOnnxError(f"{out}: cannot write, directory {out.parent} does not exist")

    source_sha256 = None
    training = None
    if isinstance(keras_model, (str, os.PathLike)):
        source = Path(keras_model)
        emit(f"loading {source}")
        model = load_keras_model(source)
        source_sha256 = sha256_file(source)
        training = _training_summary(source, source_sha256)
        name = str(source)
    else:
        model = keras_model
        name = getattr(model, "name", "the Keras model")
    _check_signature(model, name)
    data = load_parity_images(validation_csv, rows=validation_rows)

    emit(f"converting with tf2onnx (opset {opset}, {layout} input)")
    onnx_model, rewrites = convert_keras(model, opset=opset, layout=layout, optimize=optimize)
    for rewrite in rewrites:
        emit(f"rewrite: {rewrite}")

    entries = {
        meta.KEY_INPUT_LAYOUT: layout,
        meta.KEY_PIXEL_SCALE: repr(PIXEL_SCALE),
        meta.KEY_CLASS_LABELS: json.dumps(CLASS_LABELS),
        meta.KEY_OUTPUT_KIND: "probabilities",
        meta.KEY_PRECISION: "fp32",
        meta.KEY_VERSIONS: json.dumps(library_versions(), sort_keys=True),
    }
    if source_sha256 is not None:
        entries[meta.KEY_SOURCE_SHA256] = source_sha256
    if training is not None:
        entries[meta.KEY_TRAINING] = json.dumps(training, sort_keys=True)
    g.set_metadata(onnx_model, entries)

    emit(
        f"parity gate: Keras vs onnxruntime on {data.real_rows:,} digits from {data.source} "
        f"+ {len(data.names) - data.real_rows} edge inputs, batch sizes {', '.join(map(str, batch_sizes))}"
    )
    parity = check_parity(
        onnx_model,
        lambda x: model.predict(x, batch_size=256, verbose=0),
        data,
        layout=layout,
        pixel_scale=PIXEL_SCALE,
        atol=atol,
        batch_sizes=batch_sizes,
        model_name=str(out),
    )
    parity["graph_rewrites"] = rewrites
    parity["ops"] = g.op_counts(onnx_model)
    parity["opset"] = opset
    g.set_metadata(onnx_model, {meta.KEY_PARITY: json.dumps(parity, sort_keys=True)})

    with atomic_path(out, suffix=".onnx") as tmp:
        tmp.write_bytes(onnx_model.SerializeToString())
    parity_path = parity_report_path(out)
    write_json_atomic(parity_path, parity)
    worst = max(v["max_abs_diff"] for v in parity["onnxruntime"].values())
    emit(f"wrote {out} (max |Keras - ONNX| {worst:.2g}) and {parity_path}")
    return ExportResult(out, parity_path, parity, g.get_metadata(onnx_model), rewrites)
