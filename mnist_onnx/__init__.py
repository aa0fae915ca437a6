"""mnist-onnx: train the Kaggle Digit Recognizer CNN, export it to ONNX, run it anywhere.

The base install is the runtime (numpy, pandas, onnxruntime).  Importing this
package imports none of TensorFlow, tf2onnx or onnx; ``train`` and ``export``
load them only when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import CsvFormatError, GateError, MissingExtraError, MnistOnnxError, ModelError

if TYPE_CHECKING:
    from .runtime.predictor import DigitClassifier, Evaluation, predict_csv

__all__ = [
    "__version__",
    "MnistOnnxError",
    "CsvFormatError",
    "ModelError",
    "GateError",
    "MissingExtraError",
    "predict_csv",
    "DigitClassifier",
    "Evaluation",
]

# PEP 562: the runtime's names load on first use, so `import mnist_onnx` (and
# `mnist-onnx --help`) does not pay for importing onnxruntime, numpy and pandas.
_LAZY = {
    "predict_csv": "mnist_onnx.runtime.predictor",
    "DigitClassifier": "mnist_onnx.runtime.predictor",
    "Evaluation": "mnist_onnx.runtime.predictor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
