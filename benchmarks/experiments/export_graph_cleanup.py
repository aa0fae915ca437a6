"""onnxruntime latency of the tf2onnx graph before and after mnist-onnx's cleanup.

Usage: python benchmarks/experiments/export_graph_cleanup.py MODEL.keras [--csv SAMPLE.csv.gz]

Converts MODEL.keras four ways (raw tf2onnx output or cleaned, NHWC or NCHW
input), checks each against Keras on the real digits of the CSV (default: the
bundled sample), and times onnxruntime (CPU, default session options of
mnist_onnx.runtime.session.create_session) at batch 1 and batch 512.  Variants
are timed in interleaved rounds so that load from other processes on the
machine hits all of them alike; the best round is reported.  Then onnxruntime's
profiler splits the batch-512 time of the raw and the cleaned NCHW graph by
operator type, which shows what the removed nodes cost independently of noise
in the end-to-end timings.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import tempfile
import time

import numpy as np
import onnxruntime as ort

from mnist_onnx.export.convert import PIXEL_SCALE, convert_keras, load_keras_model
from mnist_onnx.export.graph import op_counts
from mnist_onnx.export.parity import BUNDLED_SAMPLE, to_model_input
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.session import create_session


def _time(session, x, calls: int) -> float:
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    for _ in range(calls):
        session.run(None, {name: x})
    return (time.perf_counter() - start) / calls


def _profile(model_bytes: bytes, x: np.ndarray, runs: int = 10) -> dict[str, float]:
    """Share of the kernel time per operator type (onnxruntime profiler, CPU)."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x})
        with open(session.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    return {op: dur / total for op, dur in per_op.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--csv", default=str(BUNDLED_SAMPLE))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    keras_model = load_keras_model(args.model)
    images = read_kaggle_csv(args.csv).images
    reference = keras_model.predict(to_model_input(images, "NHWC", PIXEL_SCALE), batch_size=256, verbose=0)
    batch512 = np.resize(images, (512, 28, 28, 1))

    variants = {}
    for optimize in (False, True):
        for layout in ("NHWC", "NCHW"):
            model, _ = convert_keras(keras_model, layout=layout, optimize=optimize)
            session = create_session(model.SerializeToString(), providers="cpu")
            name = session.get_inputs()[0].name
            probs = session.run(None, {name: to_model_input(images, layout, PIXEL_SCALE)})[0]
            label = f"{'cleaned' if optimize else 'raw tf2onnx'}, {layout}"
            variants[label] = {
                "bytes": model.SerializeToString(),
                "session": session,
                "x1": to_model_input(images[:1], layout, PIXEL_SCALE),
                "x512": to_model_input(batch512, layout, PIXEL_SCALE),
                "max_diff": float(np.abs(probs - reference).max()),
                "ops": sum(op_counts(model).values()),
                "t1": [],
                "t512": [],
            }
    for v in variants.values():  # warm-up
        _time(v["session"], v["x1"], 20)
        _time(v["session"], v["x512"], 2)
    for _ in range(args.rounds):
        for v in variants.values():
            v["t1"].append(_time(v["session"], v["x1"], 200))
            v["t512"].append(_time(v["session"], v["x512"], 5))

    print(f"{platform.processor() or platform.machine()}, {args.rounds} rounds, best round")
    print("| graph | nodes | max abs diff vs Keras | batch 1 (µs) | batch 512 (ms) | batch 512 per image (µs) |")
    print("|---|---|---|---|---|---|")
    for label, v in variants.items():
        t1, t512 = min(v["t1"]), min(v["t512"])
        print(
            f"| {label} | {v['ops']} | {v['max_diff']:.2g} | {t1 * 1e6:.0f} | {t512 * 1e3:.1f} | "
            f"{t512 / 512 * 1e6:.1f} |"
        )

    print("\nShare of onnxruntime kernel time at batch 512, by operator type (profiler, 10 runs):")
    for label in ("raw tf2onnx, NHWC", "cleaned, NCHW"):
        v = variants[label]
        shares = _profile(v["bytes"], v["x512"])
        print(f"- {label}: " + ", ".join(f"{op} {share:.2%}" for op, share in shares.items()))


if __name__ == "__main__":
    main()
