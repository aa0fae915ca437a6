"""Run every contender on the same images, interleaved, and report latency, throughput and more.

Timing method: after warm-up, each round calls every contender once per batch
size in a shuffled order, so drift on a shared machine (another process, CPU
frequency) hits all contenders alike.  Latency percentiles come from the
per-call wall times; throughput is batch size / median latency (the median,
not the mean, so one call slowed by another process does not move it).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MnistOnnxError
from .contenders import Contender

__all__ = [
    "BenchConfig",
    "FLOP_PER_IMAGE",
    "time_contenders",
    "predictions_of",
    "accuracy_of",
    "cold_start",
    "end_to_end",
]

# Multiply-accumulates of the tutorial CNN per 28x28 image, x2 for FLOP (about 85 MFLOP):
# conv1 28*28*32*(5*5*1) + conv2 28*28*64*(5*5*32) + dense1 12544*128 + dense2 128*10.
FLOP_PER_IMAGE = 2 * (28 * 28 * 32 * 25 + 28 * 28 * 64 * 800 + 12544 * 128 + 128 * 10)


@dataclass
class BenchConfig:
    """How long to measure.

    Attributes:
        batch_sizes: Images per call, one timing cell per contender and size.
        warmup: Untimed calls per contender before each batch size's rounds (at least 1 is made).
        rounds: Rounds per batch size (at least); in each round every contender,
            in a shuffled order, runs one block of timed calls.
        min_seconds: Keep adding rounds until each batch size has run this long
            in total (0: exactly ``rounds``).
        seed: Seed of the shuffled order.
        block_calls: Timed calls in a contender's block (at least).
        block_seconds: A block goes on until it has run this long.
        settle_seconds: Pause before each block, so the worker threads of the
            runtime that ran before (onnxruntime, TensorFlow and XNNPACK all
            spin-wait for a while after a call) are idle and do not compete
            with the one being timed, as they would not in a deployment that
            runs one runtime.  Each block also starts with one untimed call.
    """

    batch_sizes: tuple[int, ...] = (1, 8, 32, 128, 512)
    warmup: int = 3
    rounds: int = 10
    min_seconds: float = 0.0
    seed: int = 0
    block_calls: int = 3
    block_seconds: float = 0.02
    settle_seconds: float = 0.02


@dataclass
class Timing:
    contender: str
    batch: int
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        s = np.asarray(self.seconds)
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        return {
            "calls": int(len(s)),
            "p50_ms": float(p50 * 1e3),
            "p90_ms": float(p90 * 1e3),
            "p99_ms": float(p99 * 1e3),
            "mean_ms": float(s.mean() * 1e3),
            "throughput_ips": float(self.batch / p50),
            "gflops": float(self.batch / p50 * FLOP_PER_IMAGE / 1e9),
        }


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` images, repeated from the start when there are fewer."""
    if len(images) >= batch:
        return np.ascontiguousarray(images[:batch])
    return np.resize(images, (batch, *images.shape[1:]))


def time_contenders(
    contenders: list[Contender], images: np.ndarray, config: BenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, dict[int, dict[str, float]]]:
    """Time every contender at every batch size, interleaved.  Returns name -> batch -> summary."""
    rng = random.Random(config.seed)
    results: dict[str, dict[int, dict[str, float]]] = {c.name: {} for c in contenders}
    for batch in config.batch_sizes:
        x = batch_of(images, batch)
        for c in contenders:
            # At least one: LiteRT builds its interpreter for a batch size on the first call.
            for _ in range(max(1, config.warmup)):
                c.predict(x)
        timings = {c.name: Timing(c.name, batch) for c in contenders}
        order = list(contenders)
        rounds = 0
        started = time.perf_counter()
        while rounds < config.rounds or time.perf_counter() - started < config.min_seconds:
            rng.shuffle(order)
            for c in order:
                time.sleep(config.settle_seconds)
                c.predict(x)  # untimed: this runtime's threads and caches after another's
                block_started, calls = time.perf_counter(), 0
                while calls < config.block_calls or time.perf_counter() - block_started < config.block_seconds:
                    t0 = time.perf_counter()
                    c.predict(x)
                    timings[c.name].seconds.append(time.perf_counter() - t0)
                    calls += 1
            rounds += 1
        for name, timing in timings.items():
            results[name][batch] = timing.summary()
        if progress:
            best = max(results, key=lambda n: results[n][batch]["throughput_ips"])
            progress(
                f"batch {batch}: {rounds} rounds in {time.perf_counter() - started:.1f} s; fastest {best} "
                f"({results[best][batch]['throughput_ips']:,.0f} images/s)"
            )
    return results


def predictions_of(contender: Contender, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """Probabilities of ``contender`` over ``images`` in batches of ``batch`` (the last one padded)."""
    parts = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        # Pad the last chunk to the full batch: LiteRT then reuses one interpreter for every call.
        parts.append(contender.predict(batch_of(chunk, batch) if len(images) > batch else chunk)[: len(chunk)])
    return np.concatenate(parts)


def accuracy_of(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose most probable class is the label."""
    return float((probabilities.argmax(axis=1) == labels).mean())


# Run in a fresh interpreter: the clock starts before the first import.
_COLD_START = r"""
import time
t0 = time.perf_counter()
import json, sys
kind, model, n_batches, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None
import numpy as np
if kind == "ours":
    from mnist_onnx.runtime.predictor import DigitClassifier
    clf = DigitClassifier(model, providers="cpu", threads=threads)
    run = lambda x: clf.predict_proba(x, batch_size=len(x))
elif kind == "keras":
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    if threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    m = keras.models.load_model(model)
    run = lambda x: np.asarray(m(x.astype(np.float32) * np.float32(1 / 255), training=False))
else:
    from ai_edge_litert.interpreter import Interpreter
    def make(n):
        it = Interpreter(model_path=model, num_threads=threads)
        i = it.get_input_details()[0]["index"]
        it.resize_tensor_input(i, [n, 28, 28, 1]); it.allocate_tensors()
        return it, i, it.get_output_details()[0]["index"]
    cache = {}
    def run(x):
        it, i, o = cache[len(x)] if len(x) in cache else cache.setdefault(len(x), make(len(x)))
        it.set_tensor(i, x.astype(np.float32) * np.float32(1 / 255)); it.invoke(); return it.get_tensor(o)
run(np.zeros((1, 28, 28, 1), np.uint8))
first = time.perf_counter() - t0
xb = np.random.default_rng(0).integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)
for _ in range(n_batches):
    run(xb)
def peak_rss_mib():
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the parent's peak.
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
print(json.dumps({"cold_start_s": first, "peak_rss_mib": peak_rss_mib()}))
"""


def cold_start(
    kind: str, model: str | Path, *, threads: int | None = None, batches: int = 5, repeats: int = 3
) -> dict[str, Any]:
    """Fresh interpreter: imports + model load + first prediction, then peak RSS after ``batches`` of 512.

    ``kind`` is ``ours`` (an ONNX model), ``keras`` (a ``.keras`` model, TensorFlow
    backend) or ``litert`` (a ``.tflite`` model).  The clock starts inside the
    new process, before its first import, so Python's own start-up is left out
    for all alike.  The process sees no GPU (``CUDA_VISIBLE_DEVICES=""``).

    Returns:
        The median cold start of ``repeats`` processes and the largest peak RSS
        (MiB, from ``/proc/self/status``; None where that file does not exist).

    Raises:
        MnistOnnxError: If a process fails (the message holds the end of its stderr).
    """
    # The child imports the same mnist_onnx as this process, wherever it was started from, and sees
    # no GPU: these are CPU figures, and TensorFlow would otherwise spend its start-up on CUDA.
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        CUDA_VISIBLE_DEVICES="",
    )
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", _COLD_START, kind, str(model), str(batches), str(threads or 0)],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise MnistOnnxError(f"cold start of {kind} ({model}) failed with exit code {proc.returncode}: {tail}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "cold_start_s": float(np.median([r["cold_start_s"] for r in runs])),
        "peak_rss_mib": max((r["peak_rss_mib"] for r in runs if r["peak_rss_mib"] is not None), default=None),
        "repeats": repeats,
        "batches_of_512_after": batches,
    }


def end_to_end(
    test_csv: Path, runs: dict[str, Callable[[Path, Path], Any]], repeats: int = 3, labels: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Time read + infer + write of a whole CSV for each way of doing it (interleaved rounds).

    Each run writes an ``ImageId,Label`` CSV; its ``Label`` column is scored
    against ``labels`` when given, so the accuracy is that of the written file.

    Returns:
        name -> ``{"median_s", "best_s", "seconds", "accuracy"}``.
    """
    import pandas as pd

    times: dict[str, list[float]] = {name: [] for name in runs}
    accuracy: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name, fn in runs.items():
                out = Path(tmp) / f"{name}-{r}.csv"
                t0 = time.perf_counter()
                fn(test_csv, out)
                times[name].append(time.perf_counter() - t0)
                if r == repeats - 1:
                    written = pd.read_csv(out)["Label"].to_numpy()
                    accuracy[name] = None if labels is None else float((written == labels).mean())
    return {
        name: {"median_s": float(np.median(v)), "best_s": float(min(v)), "seconds": v, "accuracy": accuracy[name]}
        for name, v in times.items()
    }
