"""The onnxruntime-only runtime: no TensorFlow, tf2onnx or onnx imports here.

``predict_csv`` and ``DigitClassifier`` (in :mod:`.predictor`) are the public
face.  One job per module: :mod:`.model_source` (where a model's bytes come
from, the bundled models), :mod:`.session` (the one place that creates
onnxruntime sessions), :mod:`.contract` (what a model takes and gives; image
checks and conversion), :mod:`._pipeline` (prefetching, ordered parallel map),
:mod:`.results` (evaluation, prediction frames, the one CSV writer),
:mod:`.kaggle_csv` (the CSV reader shared with training), :mod:`.ray_engine`
and :mod:`.ray_plan` (the Ray Data engine), :mod:`.cli` (``mnist-onnx predict``).
Shared types are in :mod:`._types`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import ContractWarning, InvertedDigitsWarning, ProviderError, ProviderFallbackWarning
    from ._pipeline import batch_slices
    from .contract import ModelContract
    from .images import preprocess_digit
    from .kaggle_csv import DigitBatch, iter_kaggle_csv, read_kaggle_csv
    from .model_source import load_model
    from .predictor import DigitClassifier, predict_csv
    from .results import Evaluation
    from .session import create_session, resolve_providers

__all__ = [
    "predict_csv",
    "DigitClassifier",
    "Evaluation",
    "preprocess_digit",
    "ContractWarning",
    "InvertedDigitsWarning",
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
    "predict_csv": ".predictor",
    "DigitClassifier": ".predictor",
    "Evaluation": ".results",
    "preprocess_digit": ".images",
    "ContractWarning": "..errors",
    "InvertedDigitsWarning": "..errors",
    "ModelContract": ".contract",
    "batch_slices": "._pipeline",
    "create_session": ".session",
    "resolve_providers": ".session",
    "load_model": ".model_source",
    "ProviderError": "..errors",
    "ProviderFallbackWarning": "..errors",
    "DigitBatch": ".kaggle_csv",
    "iter_kaggle_csv": ".kaggle_csv",
    "read_kaggle_csv": ".kaggle_csv",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
