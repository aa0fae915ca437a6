"""End to end over a Kaggle test.csv on each provider, and the CSV reader's share of it.

For each provider (cpu, openvino, auto) and model, interleaved rounds of:
parsing alone (``read_kaggle_csv``), inference alone on the parsed array
(``predict_proba``), and ``predict_csv`` end to end (read + infer + write).
The reader's share is parse time / end-to-end time; ``overlap`` is how much
of the parse the end-to-end run hides (1 = fully hidden behind inference).

Usage::

    python benchmarks/openvino_end_to_end.py --csv test.csv --model digit_cnn.int8.onnx [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.predictor import DigitClassifier, predict_csv
from mnist_onnx.runtime.tuning import machine_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--providers", default="cpu,openvino,auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: object) -> None:
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.setdefault(name, []).append(time.perf_counter() - t0)

    images = read_kaggle_csv(args.csv).images
    classifiers = {(m.name, p): DigitClassifier(m, providers=p) for m in args.model for p in args.providers.split(",")}
    used = {f"{m} {p}": clf.providers[0] for (m, p), clf in classifiers.items()}
    print(json.dumps(used), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            timed("parse", lambda: read_kaggle_csv(args.csv))
            for (model, providers), clf in classifiers.items():
                tag = f"{model} {providers}"
                timed(f"infer {tag}", lambda c=clf: c.predict_proba(images))
                timed(
                    f"e2e {tag}",
                    lambda m=model, p=providers: predict_csv(
                        args.csv, next(x for x in args.model if x.name == m), providers=p, output=Path(tmp) / "out.csv"
                    ),
                )
    summary = {name: {"median_s": float(np.median(v)), "best_s": float(min(v)), "all": v} for name, v in times.items()}
    parse = summary["parse"]["median_s"]
    for model, providers in classifiers:
        tag = f"{model} {providers}"
        e2e, infer = summary[f"e2e {tag}"]["median_s"], summary[f"infer {tag}"]["median_s"]
        summary[f"share {tag}"] = {
            "parse_over_e2e": parse / e2e,
            "hidden_parse": max(0.0, min(1.0, (parse + infer - e2e) / parse)),
        }
    for name, cell in summary.items():
        print(f"{name:45s} {json.dumps({k: round(v, 3) for k, v in cell.items() if k != 'all'})}", flush=True)
    if args.out:
        args.out.write_text(
            json.dumps(
                {"machine": machine_id(), "rows": len(images), "providers_used": used, "summary": summary}, indent=1
            )
        )


if __name__ == "__main__":
    main()
