"""mnist-onnx: train the Kaggle Digit Recognizer CNN, export it to ONNX, run it anywhere.

The base install is the runtime (numpy, pandas, onnxruntime).  Importing this
package imports none of TensorFlow, tf2onnx or onnx; ``train`` and ``export``
load them only when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import CsvFormatError, GateError, MissingExtraError, MnistOnnxError, ModelError

__all__ = [
    "__version__",
    "MnistOnnxError",
    "CsvFormatError",
    "ModelError",
    "GateError",
    "MissingExtraError",
]
