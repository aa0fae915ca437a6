"""Our runtime on CUDA: answers against the CPU, throughput per batch size, IOBinding on/off, end to end.

Usage (on a machine with an NVIDIA GPU and the onnxruntime-gpu wheel):
    python benchmarks/gpu_check.py --out DIR [--rows 28000] [--seconds 0.5]

Needs only the runtime (no TensorFlow): it uses the bundled models and the
bundled sample of 1,000 real held-out digits.  Writes DIR/gpu_check.json and
DIR/gpu_check.md.

1. Answers: the bundled fp32 and int8 models on CUDA against the same models on
   the CPU over the 1,000 sample digits: largest probability difference, digits
   that differ, accuracy; with the runtime's CUDA options (TF32 off) and with
   TF32 convolutions on (``use_tf32=1``).
2. Throughput of ``DigitClassifier.predict_proba`` at batch sizes 1 to 8,192:
   CUDA with IOBinding (what the runtime does), the same with TF32 on, CUDA with
   plain ``session.run``, and the CPU, each timed for ``--seconds`` after a warm-up.
3. End to end: ``predict_csv`` over a ``--rows``-row CSV made of the sample's
   images repeated: CUDA (a reader thread parses ahead), CUDA with parsing and
   inference one after the other, and the CPU.  (``benchmarks/results/gpu_check_h100.*``
   came from this script with two more variants since dropped from the runtime:
   IOBinding to host arrays, and CUDA with CPU threads parsing CSV blocks.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mnist_onnx.bench.machine import cpu_info, gpu_info
from mnist_onnx.export.parity import BUNDLED_SAMPLE
from mnist_onnx.runtime.kaggle_csv import PIXEL_COLUMNS, read_kaggle_csv
from mnist_onnx.runtime.predictor import DigitClassifier
from mnist_onnx.runtime.session import CUDA


def _rate(predict, images: np.ndarray, batch: int, seconds: float) -> dict[str, float]:
    x = np.resize(images, (batch, *images.shape[1:]))
    predict(x)
    predict(x)
    calls, start = 0, time.perf_counter()
    latencies = []
    while time.perf_counter() - start < seconds or calls < 3:
        t = time.perf_counter()
        predict(x)
        latencies.append(time.perf_counter() - t)
        calls += 1
    elapsed = time.perf_counter() - start
    return {"images_per_s": round(calls * batch / elapsed, 1), "p50_ms": round(float(np.median(latencies)) * 1e3, 3)}


_GPU = "cuda"


def _tf32(on: bool) -> list:
    return [(CUDA, {"use_tf32": "1" if on else "0"}), "CPUExecutionProvider"]


def _answers(precision: str, sample, use_tf32: bool | None) -> dict:
    cpu = DigitClassifier(precision=precision, providers="cpu")
    providers = _GPU if use_tf32 is None or _GPU != "cuda" else _tf32(use_tf32)
    gpu = DigitClassifier(precision=precision, providers=providers)
    p_cpu, p_gpu = cpu.predict_proba(sample.images), gpu.predict_proba(sample.images)
    d_cpu, d_gpu = p_cpu.argmax(axis=1), p_gpu.argmax(axis=1)
    return {
        "providers": gpu.providers,
        "max_abs_diff": float(np.abs(p_cpu - p_gpu).max()),
        "digits_differ": int((d_cpu != d_gpu).sum()),
        "accuracy_cpu": float((d_cpu == sample.labels).mean()),
        "accuracy_gpu": float((d_gpu == sample.labels).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=28000)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--provider", default="cuda", help="'cpu' dry-runs this script on a machine without a GPU")
    args = parser.parse_args()
    global _GPU
    _GPU = args.provider
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"cpu": cpu_info(), "gpu": gpu_info()}
    print(json.dumps(result["gpu"]), flush=True)
    sample = read_kaggle_csv(BUNDLED_SAMPLE)

    result["answers"] = {}
    for precision in ("fp32", "int8"):
        for tf32 in (None, True):
            key = f"{precision}, {'default options' if tf32 is None else 'use_tf32=1'}"
            try:
                result["answers"][key] = _answers(precision, sample, tf32)
            except Exception as exc:  # recorded, so one failure does not hide the other figures
                result["answers"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(key, result["answers"][key], flush=True)

    result["throughput"] = {}
    for precision in ("fp32", "int8"):
        gpu = DigitClassifier(precision=precision, providers=_GPU)
        tf32 = DigitClassifier(precision=precision, providers=_tf32(True) if _GPU == "cuda" else _GPU)
        plain = DigitClassifier(precision=precision, providers=_GPU)
        plain._bound_device = None  # session.run with host arrays
        cpu = DigitClassifier(precision=precision, providers="cpu")
        for batch in (1, 16, 64, 256, 1024, 8192):
            row = {}
            for name, clf in (("cuda_iobinding", gpu), ("cuda_tf32", tf32), ("cuda_plain_run", plain), ("cpu", cpu)):
                row[name] = _rate(
                    lambda x, c=clf, b=batch: c.predict_proba(x, batch_size=b), sample.images, batch, args.seconds
                )
            result["throughput"][f"{precision} batch {batch}"] = row
            print(precision, batch, row, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "test.csv"
        pixels = np.resize(sample.images.reshape(len(sample.images), 784), (args.rows, 784))
        with open(csv, "w") as fh:
            fh.write(",".join(PIXEL_COLUMNS) + "\n")
            np.savetxt(fh, pixels, fmt="%d", delimiter=",")
        result["end_to_end"] = {"rows": args.rows}
        for precision in ("fp32", "int8"):
            for providers, overlap in ((_GPU, True), (_GPU, False), ("cpu", True)):
                clf = DigitClassifier(precision=precision, providers=providers)
                best = min(_timed(clf, csv, Path(tmp) / "sub.csv", overlap) for _ in range(3))
                key = f"{precision} {providers}" + ("" if overlap else ", overlap_reading=False")
                result["end_to_end"][key] = {"seconds": round(best, 3), "images_per_s": round(args.rows / best, 1)}
                print(key, result["end_to_end"][key], flush=True)

    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| precision, batch | CUDA, IOBinding img/s | same, TF32 on | CUDA, plain run | CPU img/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, row in result["throughput"].items():
        rates = [row[name]["images_per_s"] for name in ("cuda_iobinding", "cuda_tf32", "cuda_plain_run", "cpu")]
        lines.append(f"| {key} | " + " | ".join(f"{rate:,.0f}" for rate in rates) + " |")
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _timed(clf: DigitClassifier, csv: Path, out: Path, overlap: bool) -> float:
    start = time.perf_counter()
    clf.predict_csv(csv, output=out, overlap_reading=overlap)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
