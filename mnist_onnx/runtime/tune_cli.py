"""``mnist-onnx tune``: measure again which CPU execution provider is fastest here, and rerun the bf16 gate.

Standard library imports only at the top, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from .._argtypes import positive_int as _positive_int
from .._progress import status_printer


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add ``tune`` to the ``mnist-onnx`` parser."""
    tune = sub.add_parser(
        "tune",
        help="measure which execution provider (CPU or OpenVINO) is fastest for a model on this machine",
        description=(
            "Run the short trial behind --provider auto again: onnxruntime's CPU provider against the OpenVINO "
            "execution provider (needs: pip install 'mnist-onnx[openvino]') on the 1,000 bundled held-out "
            "digits, interleaved, for each batch size; the answer is cached per CPU, library versions, model and "
            "batch size in the user's cache directory ($MNIST_ONNX_CACHE_DIR, else $XDG_CACHE_HOME/mnist-onnx). "
            "With --precision bf16, rerun the bf16 gate (agreement with fp32 >= 99.8%%, accuracy drop <= 0.1 "
            "points) instead."
        ),
    )
    tune.add_argument("--model", metavar="PATH", help="ONNX model (default: the bundled model of --precision)")
    tune.add_argument("--precision", choices=("fp32", "int8", "bf16"), default=None,
                      help="which bundled model, or bf16 (fp32 model, bf16 compute) to rerun its gate "
                           "(default: both bundled models)")
    tune.add_argument("--batch-size", type=_positive_int, metavar="N", action="append",
                      help="batch size to measure (repeatable; default: each provider's default)")
    tune.add_argument("--clear", action="store_true", help="forget every cached choice and verdict first")
    tune.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    tune.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    """Handler of ``mnist-onnx tune``; libraries raise, the top-level CLI maps errors to exit codes."""
    from . import acceleration, tuning

    emit = status_printer(args.quiet, sys.stdout)  # the figures are this command's output
    cache = tuning.TuneCache()
    if args.clear:
        removed = cache.clear()
        if emit:
            emit(f"forgot {removed} cached entries in {cache.path}")
    if args.precision == "bf16":
        report = acceleration.retune_bf16(args.model)
        if emit:
            emit(f"bf16 gate passed: {report.summary()}")
        return 0
    precisions = [args.precision] if args.precision else (["fp32"] if args.model else ["fp32", "int8"])
    for precision in precisions:
        for batch_size in args.batch_size or [None]:
            choice = acceleration.retune(args.model, precision=precision, batch_size=batch_size)
            if emit:
                speeds = ", ".join(f"{name} {ips:,.0f} images/s" for name, ips in choice.images_per_second.items())
                model = args.model or f"bundled {precision} model"
                speeds = speeds or "no other provider to compare: OpenVINO is not available or CUDA is"
                emit(f"{model}, batch size {batch_size or 'default'}: {choice.provider} ({speeds})")
    if emit:
        emit(f"cached in {cache.path}")
    return 0
