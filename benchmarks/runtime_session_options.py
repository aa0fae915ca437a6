"""Measure the onnxruntime session options that matter for speed on this machine.

Usage:
    python benchmarks/runtime_session_options.py MODEL.onnx --csv TEST_CSV [--rounds 5]

For each configuration (intra-op threads, spinning, execution mode, graph
optimization level) it measures throughput at batch 256 over 1,024 real digits
and the median latency of one image, interleaving the configurations round by
round so that drift on a shared machine hits all of them alike.  It prints a
table of the best and the median round.  Results are for the docstring of
``mnist_onnx/runtime/session.py``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from mnist_onnx.runtime.kaggle_csv import iter_kaggle_csv

CONFIGS = {
    # name: (intra threads, spinning, execution mode, optimization level)
    "threads=1 spin=on": (1, True, "sequential", "all"),
    "threads=2 spin=on": (2, True, "sequential", "all"),
    "threads=2 spin=off": (2, False, "sequential", "all"),
    "threads=1 spin=off": (1, False, "sequential", "all"),
    "threads=2 spin=on parallel(inter=2)": (2, True, "parallel", "all"),
    "threads=2 spin=on opt=basic": (2, True, "sequential", "basic"),
    "threads=2 spin=on opt=disable": (2, True, "sequential", "disable"),
}
LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def make_session(model: str, threads: int, spinning: bool, mode: str, level: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 2 if mode == "parallel" else 1
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = LEVELS[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--csv", required=True, help="Kaggle CSV whose first --images digits are used")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()

    images = next(iter(iter_kaggle_csv(args.csv, chunk_rows=args.images))).images
    x = images.astype(np.float32) / np.float32(255)
    sessions = {name: make_session(args.model, *cfg) for name, cfg in CONFIGS.items()}
    first = sessions[next(iter(sessions))].get_inputs()[0]
    feed = first.name
    if first.shape[1] == 1:  # NCHW; with one channel only the shape differs from NHWC
        x = x.reshape(len(x), 1, 28, 28)
    for s in sessions.values():  # warm-up
        s.run(None, {feed: x[:256]})
        s.run(None, {feed: x[:1]})
    throughput: dict[str, list[float]] = {n: [] for n in sessions}
    latency: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            for i in range(0, len(x), 256):
                s.run(None, {feed: x[i : i + 256]})
            throughput[name].append(len(x) / (time.perf_counter() - start))
            times = []
            for i in range(100):
                t = time.perf_counter()
                s.run(None, {feed: x[i : i + 1]})
                times.append(time.perf_counter() - t)
            latency[name].append(statistics.median(times))
    # On a shared machine the best round is the one least disturbed by other work;
    # the median shows what a typical round got.
    print(f"onnxruntime {ort.__version__}, {args.rounds} interleaved rounds, {len(x)} images")
    print(f"{'configuration':38s} {'batch 256 img/s':>22s} {'batch 1 p50 ms':>22s}")
    print(f"{'':38s} {'best':>10s} {'median':>11s} {'best':>10s} {'median':>11s}")
    for name in sessions:
        print(
            f"{name:38s} {max(throughput[name]):10,.0f} {statistics.median(throughput[name]):11,.0f} "
            f"{1000 * min(latency[name]):10.3f} {1000 * statistics.median(latency[name]):11.3f}"
        )


if __name__ == "__main__":
    main()
