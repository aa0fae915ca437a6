"""The full benchmark behind the README's speed tables: ``mnist-onnx bench`` on the bundled models.

Usage (needs the 'bench' extra; run it on a quiet machine, it takes several minutes)::

    python benchmarks/bench_all.py KERAS_MODEL DATA_DIR [more mnist-onnx bench options, e.g. --threads 2 or --quick]

KERAS_MODEL is the ``model.keras`` the bundled models were exported from (the
benchmark checks the sha256 their metadata records, so the figures describe
exactly the models the package ships); DATA_DIR holds the ``train.csv``,
``test.csv`` and ``test_labels.csv`` that ``mnist-onnx data DATA_DIR`` writes.
It is the same as::

    mnist-onnx bench KERAS_MODEL \\
        --test DATA_DIR/test.csv --test-labels DATA_DIR/test_labels.csv \\
        --calibration DATA_DIR/train.csv \\
        --onnx mnist_onnx/runtime/bundled/digit_cnn.onnx --int8 mnist_onnx/runtime/bundled/digit_cnn.int8.onnx \\
        --out benchmarks/results

Options given after DATA_DIR come after these and win (argparse keeps the last
value).  Results land in ``benchmarks/results/``: results.json, results.md (the
README table) and results.png (the chart).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_onnx.cli import main

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "mnist_onnx" / "runtime" / "bundled"

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1].startswith("-") or sys.argv[2].startswith("-"):
        sys.exit(f"usage: python {sys.argv[0]} KERAS_MODEL DATA_DIR [mnist-onnx bench options]")
    keras_model, data = sys.argv[1], Path(sys.argv[2])
    sys.exit(
        main(
            [
                "bench",
                keras_model,
                "--test",
                str(data / "test.csv"),
                "--test-labels",
                str(data / "test_labels.csv"),
                "--calibration",
                str(data / "train.csv"),
                "--onnx",
                str(BUNDLED / "digit_cnn.onnx"),
                "--int8",
                str(BUNDLED / "digit_cnn.int8.onnx"),
                "--out",
                str(REPO / "benchmarks" / "results"),
                *sys.argv[3:],
            ]
        )
    )
