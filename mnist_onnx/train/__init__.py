"""Training (needs the ``train`` extra: TensorFlow/Keras and matplotlib).

Importing this package imports neither TensorFlow nor pandas: the names below
load on first use (PEP 562), so ``mnist-onnx --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_model", "train", "Recipe", "RECIPES", "TrainResult"]

_HOME = {
    "build_model": ".model",
    "train": ".recipes",
    "Recipe": ".recipes",
    "RECIPES": ".recipes",
    "TrainResult": ".recipes",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
