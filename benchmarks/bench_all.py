"""The full benchmark of issue 5 on this project's data: ``mnist-onnx bench`` with the paths filled in.

Usage (needs the 'bench' extra; run it on a quiet machine, it takes several minutes)::

    python benchmarks/bench_all.py [more mnist-onnx bench options, e.g. --threads 2 or --quick]

is the same as::

    mnist-onnx bench /work/runs/aug40v05last/model.keras \\
        --test /work/data/test.csv --test-labels /work/data/test_labels.csv \\
        --calibration /work/data/train.csv \\
        --onnx mnist_onnx/runtime/bundled/digit_cnn.onnx --int8 mnist_onnx/runtime/bundled/digit_cnn.int8.onnx \\
        --out benchmarks/results

The bundled ONNX models were exported and quantized from that Keras model (the
benchmark checks the sha256 their metadata records), so the figures describe
exactly the models the package ships.  Options given on the command line come
after these and win (argparse keeps the last value).  Results land in
``benchmarks/results/``: results.json, results.md (the README table) and
results.png (the chart).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_onnx.cli import main

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "mnist_onnx" / "runtime" / "bundled"
DATA = Path("/work/data")

if __name__ == "__main__":
    sys.exit(main([
        "bench", "/work/runs/aug40v05last/model.keras",
        "--test", str(DATA / "test.csv"), "--test-labels", str(DATA / "test_labels.csv"),
        "--calibration", str(DATA / "train.csv"),
        "--onnx", str(BUNDLED / "digit_cnn.onnx"), "--int8", str(BUNDLED / "digit_cnn.int8.onnx"),
        "--out", str(REPO / "benchmarks" / "results"),
        *sys.argv[1:],
    ]))
