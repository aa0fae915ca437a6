"""The bf16 gate's figures on a large held-out set: fp32 model, fp32 compute (CPU provider) vs bf16 (OpenVINO).

Usage::

    python benchmarks/openvino_bf16_gate.py --fp32 digit_cnn.onnx --csv test.csv --labels test_labels.csv

Prints the same report the runtime's gate computes on the bundled sample
(agreement, accuracy drop, max |p difference|), plus the int8 model's figures
on OpenVINO at both precisions when ``--int8`` is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from mnist_onnx.runtime.bf16_gate import evaluate_bf16
from mnist_onnx.runtime.openvino import OpenVINOConfig, create_openvino_session
from mnist_onnx.runtime.tuning import machine_id


def _probabilities(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    inp = session.get_inputs()[0]
    parts = []
    for i in range(0, len(images), 512):
        x = images[i : i + 512].reshape(-1, 1, 28, 28)
        if inp.type == "tensor(float)":
            x = x.astype(np.float32) * np.float32(1 / 255)
        parts.append(session.run(None, {inp.name: x})[0])
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--labels", type=Path, help="ImageId,Label answers when --csv has no label column")
    args = parser.parse_args()
    frame = pd.read_csv(args.csv)
    labels = frame.pop("label").to_numpy() if "label" in frame else pd.read_csv(args.labels)["Label"].to_numpy()
    images = frame.to_numpy(np.uint8)
    out: dict[str, object] = {"machine": machine_id(), "rows": len(images), "csv": args.csv.name}
    for name, model in (("fp32", args.fp32), ("int8", args.int8)):
        if model is None:
            continue
        data = model.read_bytes()
        cpu = _probabilities(ort.InferenceSession(data, providers=["CPUExecutionProvider"]), images)
        for precision in ("f32", "bf16"):
            ov = _probabilities(create_openvino_session(data, ort.SessionOptions(), OpenVINOConfig(precision)), images)
            report = evaluate_bf16(cpu, ov, labels, evaluation=f"{args.csv.name}, {name} model, OpenVINO {precision}")
            out[f"{name}-openvino-{precision}"] = report.__dict__
            print(report.summary(), "PASS" if report.passed else "REFUSED", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
