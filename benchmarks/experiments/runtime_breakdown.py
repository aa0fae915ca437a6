"""Where predict_csv's time goes: parsing alone, inference alone, end to end with and without overlap.

Usage:
    python benchmarks/experiments/runtime_breakdown.py --csv TEST_CSV [--precision int8] [--batch-size 16]
        [--chunk-rows 4096 8192 ...] [--rounds 3]

Best of ``--rounds`` for each figure.  Figures in benchmarks/levers.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mnist_onnx import DigitClassifier
from mnist_onnx.runtime.kaggle_csv import iter_kaggle_csv, read_kaggle_csv


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, help="Kaggle test.csv to read and predict")
    parser.add_argument("--precision", default="int8", choices=("fp32", "int8"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[4096])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = read_kaggle_csv(args.csv).images
    print(f"parse whole file: {best(lambda: read_kaggle_csv(args.csv), args.rounds):.3f} s")
    for rows in args.chunk_rows:
        t = best(lambda n=rows: sum(len(b) for b in iter_kaggle_csv(args.csv, chunk_rows=n)), args.rounds)
        print(f"parse in {rows}-row chunks: {t:.3f} s")
    clf = DigitClassifier(precision=args.precision, providers="cpu", batch_size=args.batch_size)
    clf.predict(images[:512])
    t = best(lambda: clf.predict_proba(images), args.rounds)
    print(f"inference alone ({len(images):,} images in memory): {t:.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "submission.csv"
        for rows in args.chunk_rows:
            for overlap in (True, False):
                t = best(
                    lambda n=rows, o=overlap: clf.predict_csv(args.csv, output=out, chunk_rows=n, overlap_reading=o),
                    args.rounds,
                )
                print(f"predict_csv end to end, {rows}-row chunks, overlap {'on' if overlap else 'off'}: {t:.3f} s")


if __name__ == "__main__":
    main()
