"""Run every contender on the same images, interleaved, and report latency, throughput and more.

Timing method: after warm-up, each round calls every contender once per batch
size in a shuffled order, so drift on a shared machine (another process, CPU
frequency) hits all contenders alike.  Latency percentiles come from the
per-call wall times; throughput is batch size / median latency.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .contenders import Contender

__all__ = ["BenchConfig", "time_contenders", "accuracy_of", "cold_start", "end_to_end", "FLOP_PER_IMAGE"]

# Multiply-accumulates of the tutorial CNN per 28x28 image, x2 for FLOP:
# conv1 28*28*32*(5*5*1) + conv2 28*28*64*(5*5*32) + dense1 12544*128 + dense2 128*10.
FLOP_PER_IMAGE = 2 * (28 * 28 * 32 * 25 + 28 * 28 * 64 * 800 + 12544 * 128 + 128 * 10)


@dataclass
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128, 512)
    warmup: int = 3
    rounds: int = 30
    min_seconds_per_cell: float = 0.0  # extra rounds until each cell has run this long (0 = fixed rounds)
    seed: int = 0


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
            "p50_ms": float(p50 * 1e3), "p90_ms": float(p90 * 1e3), "p99_ms": float(p99 * 1e3),
            "throughput_ips": float(self.batch / p50),
            "gflops": float(self.batch / p50 * FLOP_PER_IMAGE / 1e9),
        }


def time_contenders(
    contenders: list[Contender],
    images: np.ndarray,
    config: BenchConfig,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """Time every contender at every batch size, interleaved.  Returns name -> batch -> summary."""
    rng = random.Random(config.seed)
    results: dict[str, dict[int, dict[str, float]]] = {c.name: {} for c in contenders}
    for batch in config.batch_sizes:
        x = images[:batch] if len(images) >= batch else np.resize(images, (batch, *images.shape[1:]))
        for c in contenders:
            for _ in range(config.warmup):
                c.predict(x)
        timings = {c.name: Timing(c.name, batch) for c in contenders}
        order = list(contenders)
        rounds = 0
        started = time.perf_counter()
        while rounds < config.rounds or (
            config.min_seconds_per_cell and time.perf_counter() - started < config.min_seconds_per_cell * len(order)
        ):
            rng.shuffle(order)
            for c in order:
                t0 = time.perf_counter()
                c.predict(x)
                timings[c.name].seconds.append(time.perf_counter() - t0)
            rounds += 1
        for name, timing in timings.items():
            results[name][batch] = timing.summary()
        if progress:
            best = max(results, key=lambda n: results[n][batch]["throughput_ips"])
            progress(f"batch {batch}: {rounds} rounds; fastest {best} "
                     f"({results[best][batch]['throughput_ips']:,.0f} images/s)")
    return results


def predictions_of(contender: Contender, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """Probabilities of ``contender`` over ``images`` in batches of ``batch``."""
    parts = [contender.predict(images[i:i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def accuracy_of(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


_COLD_START = r"""
import time, sys, json, resource
t0 = time.perf_counter()
kind, model, n_batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
x1 = np.zeros((1, 28, 28, 1), np.uint8)
if kind == "ours":
    from mnist_onnx.runtime.predictor import DigitClassifier
    clf = DigitClassifier(model, providers="cpu")
    run = clf.predict_proba
elif kind == "keras":
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    m = keras.models.load_model(model)
    run = lambda x: np.asarray(m(x.astype(np.float32) / 255, training=False))
else:
    from ai_edge_litert.interpreter import Interpreter
    def make(n):
        it = Interpreter(model_path=model)
        i = it.get_input_details()[0]["index"]
        it.resize_tensor_input(i, [n, 28, 28, 1]); it.allocate_tensors()
        return it, i, it.get_output_details()[0]["index"]
    cache = {}
    def run(x):
        it, i, o = cache.get(len(x)) or cache.setdefault(len(x), make(len(x)))
        it.set_tensor(i, x.astype(np.float32) / 255); it.invoke(); return it.get_tensor(o)
run(x1)
first = time.perf_counter() - t0
xb = np.random.default_rng(0).integers(0, 256, (512, 28, 28, 1), dtype=np.uint8)
for _ in range(n_batches):
    run(xb)
print(json.dumps({"cold_start_s": first, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cold_start(kind: str, model: str | Path, *, batches: int = 5, repeats: int = 3) -> dict[str, float]:
    """Fresh interpreter: imports + model load + first prediction, then peak RSS after ``batches`` of 512.

    Returns the median cold start of ``repeats`` processes and the largest peak RSS.
    """
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", _COLD_START, kind, str(model), str(batches)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "cold_start_s": float(np.median([r["cold_start_s"] for r in runs])),
        "peak_rss_mb": float(max(r["peak_rss_mb"] for r in runs)),
        "repeats": repeats,
    }


def end_to_end(test_csv: Path, runs: dict[str, Callable[[Path, Path], Any]], repeats: int = 3) -> dict[str, float]:
    """Time read + infer + write of a whole test.csv for each way of doing it (median of ``repeats``, interleaved)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name, fn in runs.items():
                out = Path(tmp) / f"{name}-{r}.csv"
                t0 = time.perf_counter()
                fn(test_csv, out)
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}
