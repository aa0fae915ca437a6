"""The runtimes a user could deploy the digit CNN with, behind one small interface.

Every contender takes the same raw uint8 images (N, 28, 28, 1) and returns
(N, 10) probabilities; the scaling to float is part of what is timed, because
every deployment has to do it.  All contenders come from one trained Keras model.
Each timed call is one call of the underlying runtime at the batch size being
measured (no contender splits a batch further).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._extras import require
from ..runtime._types import Precision

__all__ = ["Contender", "ours", "keras_call", "keras_predict", "litert", "convert_litert", "default_threads"]


@dataclass
class Contender:
    """A named way to run the model.

    Attributes:
        name: Short identifier (``ours-int8``, ``keras-call``...).
        family: ``ours``, ``keras`` or ``litert`` (targets compare families).
        precision: ``fp32`` or ``int8``.
        predict: uint8 images (N, 28, 28, 1) -> float probabilities (N, 10), in one runtime call.
        meta: Provider, thread count and anything else worth recording.
    """

    name: str
    family: str
    precision: str
    predict: Callable[[np.ndarray], np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def default_threads() -> int:
    """One thread per physical core: what our runtime uses by itself, given to LiteRT too.

    LiteRT's Python interpreter has no such default of its own, so without
    ``--threads`` it gets the same count as our runtime.
    """
    from ..runtime.defaults import physical_cores

    return physical_cores()


def ours(
    model: str | Path, precision: Precision | Literal["bf16"], *, threads: int | None = None, providers: str = "cpu"
) -> Contender:
    """Our runtime: one reusable :class:`~mnist_onnx.runtime.predictor.DigitClassifier`, as a service holds it."""
    from ..runtime.predictor import DigitClassifier

    clf = DigitClassifier(model, providers=providers, threads=threads, precision=precision)

    def predict(images: np.ndarray) -> np.ndarray:
        return clf.predict_proba(images, batch_size=len(images))

    suffix = "" if providers == "cpu" else f"-{providers}"
    used = list(clf.providers)
    return Contender(
        f"ours-{precision}{suffix}",
        "ours",
        precision,
        predict,
        {
            "providers": used,
            "threads": threads if threads is not None else "onnxruntime default (one per physical core)",
            "source_sha256": _source_sha256(clf),
        },
    )


def _source_sha256(clf: Any) -> str | None:
    from ..runtime.metadata import KEY_SOURCE_SHA256

    return clf.session.get_modelmeta().custom_metadata_map.get(KEY_SOURCE_SHA256)


def _scale(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) * np.float32(1 / 255)


def keras_call(model: Any) -> Contender:
    """Keras ``model(x, training=False)``: the direct call the Keras docs recommend for small batches."""

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(_scale(images), training=False))

    return Contender("keras-call", "keras", "fp32", predict)


def keras_predict(model: Any) -> Contender:
    """Keras ``model.predict(x)``: the batch-oriented API the tutorial uses, one Keras batch per call."""

    def predict(images: np.ndarray) -> np.ndarray:
        return model.predict(_scale(images), batch_size=len(images), verbose=0)

    return Contender("keras-predict", "keras", "fp32", predict)


def convert_litert(keras_path: str | Path, out_dir: str | Path, calibration: np.ndarray) -> dict[str, Path]:
    """Convert the Keras model to LiteRT flatbuffers with TensorFlow's own TFLite converter.

    fp32: straight from the SavedModel that ``model.export`` writes.  int8: full
    integer quantization (``TFLITE_BUILTINS_INT8``) calibrated on ``calibration``
    (uint8 training images, one per representative sample), with float input
    and output so the interface matches the other contenders.

    Returns:
        ``{"fp32": path, "int8": path}`` inside ``out_dir``.
    """
    keras = require("keras", "bench")
    tf = require("tensorflow", "bench")

    out = Path(out_dir)
    saved = out / "saved_model"
    keras.models.load_model(keras_path).export(str(saved), format="tf_saved_model", verbose=False)
    paths = {"fp32": out / "model.tflite", "int8": out / "model.int8.tflite"}
    paths["fp32"].write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())

    calib = _scale(calibration)

    def representative() -> Any:
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    paths["int8"].write_bytes(converter.convert())
    return paths


def litert(path: str | Path, precision: str, *, threads: int | None = None) -> Contender:
    """LiteRT (``ai-edge-litert``) with its default XNNPACK CPU delegate.

    LiteRT fixes tensor shapes at allocation, so one interpreter is kept per
    batch size, created on its first call (the warm-up, never a timed call):
    the best case for LiteRT.
    """
    interpreter = require("ai_edge_litert.interpreter", "bench")

    n_threads = threads or default_threads()
    interpreters: dict[int, tuple[Any, int, int]] = {}

    def predict(images: np.ndarray) -> np.ndarray:
        n = len(images)
        entry = interpreters.get(n)
        if entry is None:
            it = interpreter.Interpreter(model_path=str(path), num_threads=n_threads)
            inp = it.get_input_details()[0]
            it.resize_tensor_input(inp["index"], [n, 28, 28, 1])
            it.allocate_tensors()
            entry = interpreters[n] = (it, inp["index"], it.get_output_details()[0]["index"])
        it, in_idx, out_idx = entry
        it.set_tensor(in_idx, _scale(images))
        it.invoke()
        return it.get_tensor(out_idx).copy()

    return Contender(
        f"litert-{precision}",
        "litert",
        precision,
        predict,
        {"threads": n_threads, "delegate": "XNNPACK (LiteRT's default CPU delegate)"},
    )
