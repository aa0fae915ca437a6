"""Intra-op threads over one big batch vs. one single-threaded session per core over small batches.

Usage:
    python benchmarks/runtime_parallelism.py MODEL.onnx [--images 4096] [--rounds 3]

onnxruntime runs a model layer by layer over the whole batch.  For this CNN a
batch's convolution activations are about 0.3 MiB an image (fp32), so at
batch 8 and beyond a layer's input and output no longer fit in a core's L2
cache.  This script measures throughput for:

* ``intra B``: one session with one intra-op thread per core, batches of B;
* ``pool B``:  one single-threaded session per core, each fed batches of B
  from its own Python thread (onnxruntime releases the GIL while it runs);
* ``shared B``: one single-threaded session run concurrently from one
  Python thread per core.

Configurations are interleaved round by round; the table shows images/s,
best and median round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np
import onnxruntime as ort

from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.session import create_session


def _input(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / np.float32(255)
    shape = session.get_inputs()[0].shape
    return x.reshape((len(x), 1, 28, 28) if shape[1] == 1 else (len(x), 28, 28, 1))


def intra(model: str, x_all: np.ndarray, batch: int, threads: int):
    session = create_session(model, providers="cpu", threads=threads)
    name = session.get_inputs()[0].name
    x = _input(session, x_all)

    def run() -> float:
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            session.run(None, {name: x[i : i + batch]})
        return time.perf_counter() - start

    return run


def pool(model: str, x_all: np.ndarray, batch: int, workers: int, shared: bool = False):
    if shared:  # one single-threaded session, run concurrently from every worker thread
        sessions = [create_session(model, providers="cpu", threads=1)] * workers
    else:
        sessions = [create_session(model, providers="cpu", threads=1) for _ in range(workers)]
    name = sessions[0].get_inputs()[0].name
    x = _input(sessions[0], x_all)
    parts = np.array_split(np.arange(len(x)), workers)

    def work(session: ort.InferenceSession, idx: np.ndarray) -> None:
        lo, hi = idx[0], idx[-1] + 1
        for i in range(lo, hi, batch):
            session.run(None, {name: x[i : min(i + batch, hi)]})

    def run() -> float:
        threads = [threading.Thread(target=work, args=(s, p)) for s, p in zip(sessions, parts, strict=True)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--csv", default="mnist_onnx/runtime/bundled/sample.csv.gz")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    images = read_kaggle_csv(args.csv).images
    images = np.concatenate([images] * (args.images // len(images) + 1))[: args.images]
    configs = {f"intra {b}": intra(args.model, images, b, args.cores) for b in (1, 2, 4, 8, 16, 64, 256)}
    configs |= {f"pool {b}": pool(args.model, images, b, args.cores) for b in (1, 2, 4, 8, 16, 64)}
    configs |= {f"shared {b}": pool(args.model, images, b, args.cores, shared=True) for b in (4, 16, 64)}
    for run in configs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.rounds):
        for key, run in configs.items():
            times[key].append(run())
    print(f"{args.model}: {args.images} images, {args.cores} cores, {args.rounds} interleaved rounds")
    print("| configuration | best (images/s) | median (images/s) |\n|---|---|---|")
    for key, ts in times.items():
        print(f"| {key} | {args.images / min(ts):,.0f} | {args.images / statistics.median(ts):,.0f} |")


if __name__ == "__main__":
    main()
