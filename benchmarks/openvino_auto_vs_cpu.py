"""``providers="auto"`` against onnxruntime's CPU provider alone, per call size, in one interleaved run.

Both are :class:`~mnist_onnx.runtime.predictor.DigitClassifier` objects with
their defaults, as a user builds them; every call predicts ``batch`` digits at
once (``predict_proba``).  Contenders are interleaved (shuffled order each
round, a short pause before each block so the other's spinning threads are
idle); each round's auto / CPU ratio is paired within the round, and the
median over rounds is reported, with the labels compared.  A second, identical
CPU-provider classifier runs as a control: its ratio to the first is the
run's noise floor (1.00x on a quiet machine).

Usage::

    MNIST_ONNX_CACHE_DIR=$(mktemp -d) python benchmarks/openvino_auto_vs_cpu.py \\
        [--precisions fp32,int8] [--batch-sizes 1,16,512] [--rounds 7] [--block-seconds 0.3] [--out auto.json]

An empty ``MNIST_ONNX_CACHE_DIR`` makes ``auto`` run its trial now, on the
machine as it is; the trial's choice and crossover are printed.  Needs
``pip install 'mnist-onnx[openvino]'`` for OpenVINO to be a candidate.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mnist_onnx.runtime import acceleration, tuning
from mnist_onnx.runtime.predictor import DigitClassifier


def _rate(predict: Callable[[np.ndarray], Any], batches: list[np.ndarray], seconds: float) -> float:
    """Images per second over at least ``seconds`` (and two calls), after one untimed call."""
    predict(batches[0])
    return tuning.images_per_second(predict, batches, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--batch-sizes", default="1,16,512")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block-seconds", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    images, _, sample = acceleration.sample_digits()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rng = random.Random(args.seed)
    report: dict[str, Any] = {
        "cpu": tuning.machine_id(),
        "python": platform.python_version(),
        "sample": sample,
        "rows": [],
    }
    print(f"# {sample}; {args.rounds} rounds, >= {args.block_seconds} s a block")
    for precision in args.precisions.split(","):
        auto = DigitClassifier(precision=precision, providers="auto")  # type: ignore[arg-type]
        cpu = DigitClassifier(precision=precision, providers="cpu")  # type: ignore[arg-type]
        control = DigitClassifier(precision=precision, providers="cpu")  # type: ignore[arg-type]
        choice = auto.provider_choice
        trial = (
            f"{choice.provider}, CPU provider below {choice.cpu_below} images, trial images/s by call size "
            f"{ {s: {k: round(v) for k, v in d.items()} for s, d in sorted(choice.by_size.items())} }"
            if choice is not None
            else "no trial (OpenVINO unavailable, or CUDA offered)"
        )
        print(f"{precision}: auto runs on {auto.providers[0]}; choice: {trial}")
        for size in sizes:
            batches = [images[i : i + size] for i in range(0, len(images) - size + 1, size)] or [
                np.resize(images, (size, *images.shape[1:]))
            ]
            checked = batches[:64]  # labels compared on the digits of up to 64 calls
            same = all((auto.predict(b) == cpu.predict(b)).all() for b in checked)
            runners = {"auto": auto.predict_proba, "cpu": cpu.predict_proba, "control": control.predict_proba}
            speeds: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(args.rounds):
                order = list(runners)
                rng.shuffle(order)
                for name in order:
                    time.sleep(0.05)
                    speeds[name].append(_rate(runners[name], batches, args.block_seconds))
            ratio = statistics.median(a / c for a, c in zip(speeds["auto"], speeds["cpu"], strict=True))
            noise = statistics.median(a / c for a, c in zip(speeds["control"], speeds["cpu"], strict=True))
            row = {
                "precision": precision,
                "batch": size,
                "auto_ips": statistics.median(speeds["auto"]),
                "cpu_ips": statistics.median(speeds["cpu"]),
                "auto_over_cpu": ratio,
                "control_over_cpu": noise,
                "labels_identical": same,
                "labels_compared": sum(len(b) for b in checked),
                "auto_provider": auto.providers[0],
                "auto_cpu_below": choice.cpu_below if choice is not None else None,
            }
            report["rows"].append(row)
            print(
                f"  batch {size:>4}: auto {row['auto_ips']:>9,.0f} images/s, CPU provider {row['cpu_ips']:>9,.0f}"
                f" -> auto / CPU {ratio:.2f}x (control {noise:.2f}x); labels identical on "
                f"{row['labels_compared']:,} digits: {same}"
            )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
