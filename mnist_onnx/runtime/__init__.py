"""The onnxruntime-only runtime: no TensorFlow, tf2onnx or onnx imports here.

``predict_csv`` and ``DigitClassifier`` (in :mod:`.predictor`) are the public
face; :mod:`.session` is the one place that creates onnxruntime sessions;
:mod:`.kaggle_csv` is the CSV reader shared with training.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kaggle_csv import DigitBatch, iter_kaggle_csv, read_kaggle_csv
    from .predictor import DigitClassifier, Evaluation, ModelContract, batch_slices, predict_csv
    from .session import ProviderError, ProviderFallbackWarning, create_session, load_model, resolve_providers

__all__ = [
    "predict_csv",
    "DigitClassifier",
    "Evaluation",
    "ModelContract",
    "batch_slices",
    "create_session",
    "load_model",
    "resolve_providers",
    "ProviderError",
    "ProviderFallbackWarning",
    "DigitBatch",
    "iter_kaggle_csv",
    "read_kaggle_csv",
]

# PEP 562: training imports `mnist_onnx.runtime.kaggle_csv` and the CLI imports
# `mnist_onnx.runtime.cli`; neither should pay for importing onnxruntime.
_HOME = {
    **dict.fromkeys(("predict_csv", "DigitClassifier", "Evaluation", "ModelContract", "batch_slices"), ".predictor"),
    **dict.fromkeys(("create_session", "load_model", "resolve_providers", "ProviderError",
                     "ProviderFallbackWarning"), ".session"),
    **dict.fromkeys(("DigitBatch", "iter_kaggle_csv", "read_kaggle_csv"), ".kaggle_csv"),
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
