"""How fast the Kaggle CSV reader parses, against pandas' C parser, in one run.

Usage:
    python benchmarks/csv_parse_speed.py CSV [CSV ...] [--rounds 5]

For each file (e.g. the test.csv and train.csv of ``mnist-onnx data``): ``read_kaggle_csv``
(numpy on blocks of lines), ``iter_kaggle_csv`` in 4,096-row chunks, and pandas'
C parser straight to uint8 on the whole file and in 4,096-row chunks (what the
reader used before).  Contenders run interleaved, round by round; the table
shows each one's best and median seconds, and checks that all of them return the
same pixels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from mnist_onnx.runtime.kaggle_csv import iter_kaggle_csv, read_kaggle_csv


def _pandas_whole(path: str) -> np.ndarray:
    return pd.read_csv(path, engine="c", dtype=np.uint8).to_numpy()


def _pandas_chunks(path: str) -> np.ndarray:
    return np.concatenate([c.to_numpy() for c in pd.read_csv(path, engine="c", dtype=np.uint8, chunksize=4096)])


def _values(batch) -> np.ndarray:
    pixels = batch.images.reshape(len(batch.images), -1)
    return pixels if batch.labels is None else np.column_stack([batch.labels, pixels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", help="Kaggle CSVs to parse (e.g. DATA_DIR/test.csv DATA_DIR/train.csv)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for path in args.csv:
        contenders = {
            "read_kaggle_csv (numpy blocks)": lambda p=path: _values(read_kaggle_csv(p)),
            "iter_kaggle_csv, 4,096-row chunks": lambda p=path: np.concatenate(
                [_values(b) for b in iter_kaggle_csv(p, chunk_rows=4096)]
            ),
            "pandas C parser to uint8, whole file": lambda p=path: _pandas_whole(p),
            "pandas C parser to uint8, 4,096-row chunks": lambda p=path: _pandas_chunks(p),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        reference = None
        for _ in range(args.rounds):
            for name, run in contenders.items():
                start = time.perf_counter()
                values = run()
                times[name].append(time.perf_counter() - start)
                if reference is None:
                    reference = values
                elif not np.array_equal(values, reference):
                    raise SystemExit(f"{name} read {path} differently")
        print(f"{path}: {len(reference):,} rows, {args.rounds} interleaved rounds")
        for name, values in times.items():
            print(f"  {name:45s} best {min(values):.3f} s, median {statistics.median(values):.3f} s")


if __name__ == "__main__":
    main()
