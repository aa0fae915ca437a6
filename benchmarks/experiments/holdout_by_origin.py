"""Held-out accuracy split by where each image came from in MNIST.

Usage:
    python benchmarks/experiments/holdout_by_origin.py DATA_DIR [MODEL.onnx ...]   (default: the bundled fp32 model)

``mnist-onnx data`` orders the 70,000 images of the MNIST pickle (50,000
training, 10,000 validation, 10,000 test, in that order) by
``kaggle_split_order()`` and keeps the last 28,000 as test.csv, so the pickle
index of every held-out row, and with it its MNIST part, is known.  If one
part were much harder (MNIST's test digits come from other writers), the
held-out accuracy would depend on the mix.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from mnist_onnx import predict_csv
from mnist_onnx.data import kaggle_split_order

PARTS = (
    ("MNIST training part", 0, 50_000),
    ("MNIST validation part", 50_000, 60_000),
    ("MNIST test part", 60_000, 70_000),
)


def main() -> None:
    data = Path(sys.argv[1])
    models = sys.argv[2:] or [None]
    held_out = kaggle_split_order()[42_000:]
    truth = pd.read_csv(data / "test_labels.csv")["Label"].to_numpy()
    for model in models:
        correct = predict_csv(data / "test.csv", model)["Label"].to_numpy() == truth
        print(f"{model or 'bundled fp32 model'}: {correct.mean():.4%} of {len(truth):,} held-out rows")
        for name, lo, hi in PARTS:
            rows = (held_out >= lo) & (held_out < hi)
            print(f"  {name:22s} {correct[rows].mean():.4%} of {int(rows.sum()):,}")


if __name__ == "__main__":
    main()
