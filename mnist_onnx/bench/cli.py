"""Options of ``mnist-onnx bench`` (standard library imports only, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from .._argtypes import non_negative_int as _non_negative_int
from .._argtypes import positive_int as _positive_int

#: --quick: enough to see every stage work, in well under a minute of measuring.
QUICK: dict[str, Any] = {
    "batch_sizes": (1, 8),
    "warmup": 1,
    "rounds": 3,
    "rows": 256,
    "cold_start_repeats": 1,
    "end_to_end_repeats": 1,
}
_T = TypeVar("_T")


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(_positive_int(part.strip()) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return tuple(sorted(set(sizes)))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add ``bench`` to the ``mnist-onnx`` parser."""
    bench = sub.add_parser(
        "bench",
        help="benchmark our runtime against Keras and LiteRT on one Keras model (needs the 'bench' extra)",
        description=(
            "Build every contender from KERAS_MODEL: our runtime in fp32 and int8 (exported and quantized "
            "with their gates unless --onnx/--int8 are given), Keras model(x) and model.predict, and LiteRT "
            "fp32 and int8 converted with TensorFlow's TFLite converter; with onnxruntime-gpu and a GPU, our "
            "runtime on CUDA too.  Measures latency (p50/p90/p99) and throughput per batch size with the "
            "contenders interleaved, accuracy on the held-out rows, predict_csv end to end against pandas + "
            "Keras, cold start and peak memory in fresh processes, and checks the speed targets (ratios of our "
            "runtime against LiteRT and Keras measured in the same run, listed in results.md).  "
            "Writes results.json, results.md and results.png into --out."
        ),
    )
    bench.add_argument("keras_model", metavar="KERAS_MODEL", help="trained .keras model every contender comes from")
    bench.add_argument(
        "--test",
        required=True,
        metavar="CSV",
        help="held-out rows: a Kaggle test.csv (with --test-labels) or a train-format CSV with labels",
    )
    bench.add_argument(
        "--test-labels", metavar="CSV", help="answers for --test (ImageId,Label) when it has no label column"
    )
    bench.add_argument(
        "--calibration",
        required=True,
        metavar="TRAIN_CSV",
        help="Kaggle train.csv whose first rows calibrate both int8 models (ours and LiteRT's)",
    )
    bench.add_argument(
        "--calibration-rows", type=_positive_int, default=1000, metavar="N", help="calibration images (default: 1000)"
    )
    bench.add_argument("--out", required=True, metavar="DIR", help="directory for the results and converted models")
    bench.add_argument(
        "--onnx", metavar="MODEL.onnx", help="reuse this fp32 ONNX model of KERAS_MODEL (default: export it)"
    )
    bench.add_argument(
        "--int8", metavar="MODEL.int8.onnx", help="reuse this int8 ONNX model (default: quantize --onnx)"
    )
    bench.add_argument(
        "--batch-sizes", type=_batch_sizes, metavar="N,N,...", help="batch sizes to time (default: 1,8,32,128,512)"
    )
    bench.add_argument(
        "--rounds",
        type=_positive_int,
        metavar="N",
        help="rounds per batch size, at least; in each, every contender runs a block of at least "
        "3 timed calls (default: 10)",
    )
    bench.add_argument(
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help="keep adding rounds until each batch size has run this long (default: 0)",
    )
    bench.add_argument(
        "--warmup",
        type=_positive_int,
        metavar="N",
        help="untimed calls per contender and batch size, at least 1 (default: 3)",
    )
    bench.add_argument("--rows", type=_positive_int, metavar="N", help="use only the first N rows of --test")
    bench.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="threads for every contender (default: each runtime's own; LiteRT one per physical core)",
    )
    bench.add_argument(
        "--cold-start-repeats",
        type=_non_negative_int,
        metavar="N",
        help="fresh processes per cold start, 0 skips (default: 3)",
    )
    bench.add_argument(
        "--end-to-end-repeats", type=_non_negative_int, metavar="N", help="end-to-end rounds, 0 skips (default: 3)"
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: batch sizes 1,8, 1 warm-up call, 3 rounds, the first 256 rows, one "
        "cold start and one end-to-end round (options given explicitly still win)",
    )
    gpu = bench.add_mutually_exclusive_group()
    gpu.add_argument(
        "--gpu",
        dest="gpu",
        action="store_true",
        default=None,
        help="also run our fp32 runtime on CUDA; fail if it cannot (default: when onnxruntime offers CUDA)",
    )
    gpu.add_argument("--no-gpu", dest="gpu", action="store_false", help="CPU figures only")
    bench.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    bench.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from .._extras import require
    from .._progress import status_printer
    from .._tf_logging import quiet_tensorflow_logs

    quiet_tensorflow_logs()  # before TensorFlow is first imported

    # Fail before any work when the bench extra is missing.
    for module in ("tensorflow", "keras", "ai_edge_litert.interpreter", "matplotlib"):
        require(module, "bench")
    from .runner import BenchConfig
    from .suite import run_benchmark

    quick: dict[str, Any] = QUICK if args.quick else {}
    defaults = BenchConfig()

    def pick(given: _T | None, key: str, default: _T) -> _T:
        return given if given is not None else quick.get(key, default)

    config = BenchConfig(
        batch_sizes=pick(args.batch_sizes, "batch_sizes", defaults.batch_sizes),
        warmup=pick(args.warmup, "warmup", defaults.warmup),
        rounds=pick(args.rounds, "rounds", defaults.rounds),
        min_seconds=args.duration or 0.0,
    )
    emit = status_printer(args.quiet)
    results = run_benchmark(
        args.keras_model,
        args.test,
        args.out,
        calibration_csv=args.calibration,
        test_labels_csv=args.test_labels,
        onnx_model=args.onnx,
        int8_model=args.int8,
        config=config,
        rows=pick(args.rows, "rows", None),
        calibration_rows=args.calibration_rows,
        threads=args.threads,
        cold_start_repeats=pick(args.cold_start_repeats, "cold_start_repeats", 3),
        end_to_end_repeats=pick(args.end_to_end_repeats, "end_to_end_repeats", 3),
        gpu=args.gpu,
        progress=emit,
    )
    if emit:
        for t in results["targets"]:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
            emit(f"target: {t['target']}: {value} (needed {t['direction']} {t['threshold']:.2f}) {verdict}")
    return 0
