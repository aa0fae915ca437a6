"""End-to-end ``predict_csv`` (fp32 and int8) against Keras' ``model.predict``, in one run.

Usage (needs the 'train' extra for Keras):
    python benchmarks/runtime_vs_keras.py --keras MODEL.keras [--fp32 MODEL.onnx] [--int8 MODEL.int8.onnx]
        --csv TEST_CSV --labels TEST_LABELS_CSV [--rounds 3]

Keras gets the easier job: its input array is read and scaled before the clock
starts, and only ``model.predict(x)`` (default batch size 32) is timed.  Our
runtime is timed end to end: ``predict_csv`` reads the CSV, builds the session,
predicts and writes the submission.  Contenders run interleaved, round by round,
so drift on a shared machine hits all of them alike; the table shows the best
and the median round and the accuracy of each against the held-out answers.
``--fp32``/``--int8`` default to the bundled models.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.predictor import predict_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keras", required=True)
    parser.add_argument("--fp32")
    parser.add_argument("--int8")
    parser.add_argument("--csv", required=True, help="Kaggle test.csv")
    parser.add_argument("--labels", required=True, help="its answers (ImageId,Label)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    model = keras.models.load_model(args.keras)
    x = read_kaggle_csv(args.csv).images.astype(np.float32) / np.float32(255.0)
    truth = pd.read_csv(args.labels)["Label"].to_numpy() if args.labels else None
    model.predict(x[:64], verbose=0)  # build the predict function before timing
    out = Path(tempfile.mkdtemp()) / "submission.csv"

    def run_keras() -> np.ndarray:
        return model.predict(x, verbose=0).argmax(axis=1)

    def run_onnx(precision: str, path: str | None):
        return lambda: predict_csv(args.csv, path, precision=precision, providers="cpu", output=out)["Label"].to_numpy()

    contenders = {
        "Keras model.predict (array in memory)": run_keras,
        "predict_csv fp32 (read+infer+write)": run_onnx("fp32", args.fp32),
        "predict_csv int8 (read+infer+write)": run_onnx("int8", args.int8),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    accuracy: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            labels = run()
            times[name].append(time.perf_counter() - start)
            if truth is not None:
                accuracy[name] = float((labels == truth).mean())
    keras_best, keras_median = min(times[next(iter(times))]), statistics.median(times[next(iter(times))])
    print(f"{args.csv}: {len(x):,} rows, {args.rounds} interleaved rounds, keras {keras.__version__}")
    keras_times = times[next(iter(times))]
    print(f"{'contender':40s} {'best s':>7s} {'median s':>9s} {'speed-up vs Keras':>25s} {'accuracy':>9s}")
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        # Each round's Keras time over ours in that same round; the lowest is the worst case seen.
        worst = min(k / v for k, v in zip(keras_times, values, strict=True))
        ratio = f"{keras_best / best:.2f}x / {keras_median / median:.2f}x / {worst:.2f}x"
        shown = f"{accuracy[name]:.4f}" if name in accuracy else "-"
        print(f"{name:40s} {best:7.2f} {median:9.2f} {ratio:>25s} {shown:>9s}")
    print("(speed-up: best round / median round / lowest of the per-round ratios)")


if __name__ == "__main__":
    main()
