"""Export a trained Keras model to ONNX and quantize it to int8 (needs the ``export`` extra).

:func:`export_onnx` converts with tf2onnx and keeps the model only if it
passes the parity gate; :func:`quantize_int8` keeps an int8 model only if it
passes the accuracy gate.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .convert import ExportResult, export_onnx
    from .quantize import QuantizeResult, QuantOptions, quantize_int8

__all__ = ["export_onnx", "ExportResult", "quantize_int8", "QuantOptions", "QuantizeResult"]

# PEP 562: the CLI imports `mnist_onnx.export.cli`, which imports this package;
# the names below load TensorFlow, tf2onnx, onnx and onnxruntime, so they load
# on first use only and `mnist-onnx --help` stays fast.
_HOME = {
    "export_onnx": ".convert",
    "ExportResult": ".convert",
    "quantize_int8": ".quantize",
    "QuantOptions": ".quantize",
    "QuantizeResult": ".quantize",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
