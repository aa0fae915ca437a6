"""End-to-end ``predict_csv`` on a Kaggle CSV: speed by option, and peak memory by file size.

Usage:
    # wall time of read + infer + write, interleaved over configurations:
    python benchmarks/runtime_predict_csv.py speed MODEL.onnx --csv TEST_CSV [--rounds 3]
    # peak resident memory for test.csv and for a file N times as long (written to --big):
    python benchmarks/runtime_predict_csv.py memory MODEL.onnx --csv TEST_CSV [--times 10]

Each memory figure comes from a fresh subprocess (``resource.getrusage``'s
``ru_maxrss``), so one run's allocations cannot hide another's.  Nothing is
asserted; the figures go into the runtime's docstrings and the report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    # name: keyword arguments of DigitClassifier (threads, batch_size) and predict_csv (overlap_reading)
    "batch 64": {"batch_size": 64, "overlap_reading": False},
    "batch 256": {"batch_size": 256, "overlap_reading": False},
    "batch 1024": {"batch_size": 1024, "overlap_reading": False},
    "batch 256, overlap reading": {"batch_size": 256, "overlap_reading": True},
    "batch 256, threads=1": {"batch_size": 256, "threads": 1, "overlap_reading": False},
    "batch 256, threads=1, overlap reading": {"batch_size": 256, "threads": 1, "overlap_reading": True},
}

_MEMORY_CHILD = """
import json, resource, sys, time
from mnist_onnx.runtime.predictor import DigitClassifier
clf = DigitClassifier(sys.argv[1], providers="cpu", batch_size=int(sys.argv[4]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
frame = clf.predict_csv(sys.argv[2], output=sys.argv[3])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": len(frame), "seconds": seconds, "peak_mib_before": before / 1024, "peak_mib": peak / 1024}))
"""


def speed(args: argparse.Namespace) -> None:
    from mnist_onnx.runtime.kaggle_csv import iter_kaggle_csv
    from mnist_onnx.runtime.predictor import DigitClassifier

    configs = {name: CONFIGS[name] for name in (args.only or CONFIGS)}
    classifiers = {}
    for name, options in configs.items():
        build = {k: v for k, v in options.items() if k in ("threads", "batch_size")}
        classifiers[name] = DigitClassifier(args.model, providers="cpu", **build)
    out = Path(tempfile.mkdtemp()) / "submission.csv"
    times: dict[str, list[float]] = {name: [] for name in configs}
    rows = 0
    for _ in range(args.rounds):
        for name, options in configs.items():
            call = {k: v for k, v in options.items() if k == "overlap_reading"}
            start = time.perf_counter()
            frame = classifiers[name].predict_csv(args.csv, output=out, **call)
            times[name].append(time.perf_counter() - start)
            rows = len(frame)
    # On a shared machine the best round is the one least disturbed by other work.
    print(f"{args.csv}: {rows:,} rows; {args.rounds} interleaved rounds (read + infer + write)")
    print(f"{'configuration':40s} {'best s':>7s} {'images/s':>9s} {'median s':>9s}   all rounds")
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:40s} {best:7.2f} {rows / best:9,.0f} {median:9.2f}   {' '.join(f'{v:.2f}' for v in values)}")
    read_times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _batch in iter_kaggle_csv(args.csv):
            pass
        read_times.append(time.perf_counter() - start)
    median = statistics.median(read_times)
    print(f"{'reading alone (iter_kaggle_csv)':40s} {min(read_times):7.2f} {'':9s} {median:9.2f}")


def memory(args: argparse.Namespace) -> None:
    big = Path(args.big)
    source = Path(args.csv)
    with open(source, "rb") as fh:
        header = fh.readline()
        body = fh.read()
    with open(big, "wb") as fh:
        fh.write(header)
        for _ in range(args.times):
            fh.write(body)
    try:
        for path in (source, big):
            out = Path(tempfile.mkdtemp()) / "submission.csv"
            result = subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, args.model, str(path), str(out), str(args.batch_size)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(result.stdout.splitlines()[-1])
            print(
                f"{path.name} ({path.stat().st_size / 2**20:,.0f} MiB, {figures['rows']:,} rows, "
                f"batch {args.batch_size}): "
                f"peak RSS {figures['peak_mib']:,.0f} MiB (after loading the model: "
                f"{figures['peak_mib_before']:,.0f} MiB), {figures['seconds']:.1f} s"
            )
    finally:
        big.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "memory"))
    parser.add_argument("model")
    parser.add_argument("--csv", required=True, help="Kaggle test.csv to predict")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", action="append", choices=list(CONFIGS), help="speed: run only this configuration (repeatable)"
    )
    parser.add_argument("--times", type=int, default=10, help="memory: how many copies of the CSV's rows")
    parser.add_argument("--batch-size", type=int, default=256, help="memory: images per onnxruntime call")
    parser.add_argument("--big", default=str(Path(tempfile.gettempdir()) / "mnist-onnx-big-test.csv"))
    args = parser.parse_args()
    speed(args) if args.mode == "speed" else memory(args)


if __name__ == "__main__":
    main()
