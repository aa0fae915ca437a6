"""mnist-onnx: train the Kaggle Digit Recognizer CNN, export it to ONNX, run it anywhere.

The base install is the runtime (numpy, pandas, onnxruntime).  Importing this
package imports none of TensorFlow, tf2onnx or onnx; ``train`` and ``export``
load them only when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import (
    ContractWarning,
    CsvFilesError,
    CsvFormatError,
    DataError,
    GateError,
    ImageError,
    InvertedDigitsWarning,
    MissingExtraError,
    MnistOnnxError,
    ModelError,
    ProviderError,
    ProviderFallbackWarning,
)

if TYPE_CHECKING:
    from .runtime.images import preprocess_digit
    from .runtime.predictor import DigitClassifier, predict_csv
    from .runtime.ray_engine import predict_csv_files
    from .runtime.results import Evaluation

__all__ = [
    "__version__",
    "predict_csv",
    "predict_csv_files",
    "DigitClassifier",
    "Evaluation",
    "preprocess_digit",
    "ImageError",
    "ContractWarning",
    "InvertedDigitsWarning",
    "MnistOnnxError",
    "CsvFormatError",
    "CsvFilesError",
    "ModelError",
    "ProviderError",
    "ProviderFallbackWarning",
    "DataError",
    "GateError",
    "MissingExtraError",
]

# PEP 562: the runtime's names load on first use, so `import mnist_onnx` (and
# `mnist-onnx --help`) does not pay for importing onnxruntime, numpy and pandas.
_LAZY = {
    "predict_csv": "mnist_onnx.runtime.predictor",
    "DigitClassifier": "mnist_onnx.runtime.predictor",
    "Evaluation": "mnist_onnx.runtime.results",
    "preprocess_digit": "mnist_onnx.runtime.images",
    "predict_csv_files": "mnist_onnx.runtime.ray_engine",  # imports Ray only when called
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public API only: not the submodules, helpers and imports that live in this namespace too.
    return sorted(__all__)
