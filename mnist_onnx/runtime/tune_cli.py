"""``mnist-onnx tune``: measure again which CPU execution provider is fastest here, and rerun the bf16 gate.

Standard library imports only at the top, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

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
            "digits, interleaved, for each batch size (when OpenVINO wins, also calls of 16 and 1 images, to find "
            "the call size below which the CPU provider stays faster); the answer is cached per CPU, library "
            "versions, model and batch size in the user's cache directory ($MNIST_ONNX_CACHE_DIR, else "
            "$XDG_CACHE_HOME/mnist-onnx, else ~/.cache/mnist-onnx). "
            "With --precision bf16, rerun the bf16 gate (agreement with fp32 >= 99.8%, accuracy drop <= 0.1 "
            "points) instead."
        ),
    )
    tune.add_argument("--model", metavar="PATH", help="ONNX model (default: the bundled model of --precision)")
    tune.add_argument(
        "--precision",
        choices=("fp32", "int8", "bf16"),
        default=None,
        help="which bundled model, or bf16 (fp32 model, bf16 compute) to rerun its gate (default: both bundled models)",
    )
    tune.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        action="append",
        help="batch size to measure (repeatable; default: each provider's default)",
    )
    tune.add_argument("--clear", action="store_true", help="forget every cached choice and verdict first")
    tune.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    tune.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    """Handler of ``mnist-onnx tune``; libraries raise, the top-level CLI maps errors to exit codes.

    Warnings (a damaged or unwritable cache, a plugin that cannot be used) are printed as one line each on
    standard error, even with ``--quiet``; "cached in" is said only when every answer was written.
    """
    from ..errors import CacheWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wrote = _tune(args)
        finally:
            for message in dict.fromkeys(str(warning.message) for warning in caught):
                print(f"mnist-onnx tune: warning: {message}", file=sys.stderr)
    emit = status_printer(args.quiet, sys.stdout)
    unsaved = any(issubclass(w.category, CacheWarning) and "cannot save" in str(w.message) for w in caught)
    if emit:
        from . import tuning

        where = tuning.TuneCache().path
        if unsaved:
            emit(f"not cached: {where} could not be written (see the warning)")
        elif wrote:
            emit(f"cached in {where}")
    return 0


def _tune(args: argparse.Namespace) -> bool:
    """Run what ``args`` asks for and print its figures; returns whether any answer was measured (and cached)."""
    from . import tuning

    emit = status_printer(args.quiet, sys.stdout)  # the figures are this command's output
    cache = tuning.TuneCache()
    if args.clear:
        removed = cache.clear()
        if emit:
            emit(f"forgot {removed} cached entries in {cache.path}")
    if args.precision == "bf16":
        report = _retune_bf16(args.model)
        if emit:
            emit(f"bf16 gate passed: {report.summary()}")
        return True
    # A --model without --precision is taken at its own precision (its metadata), not checked against fp32.
    precisions = [args.precision] if args.precision else ([None] if args.model else ["fp32", "int8"])
    wrote = False
    for precision in precisions:
        for batch_size in args.batch_size or [None]:
            choice = _retune(args.model, precision=precision, batch_size=batch_size)
            wrote = wrote or bool(choice.images_per_second)
            if emit:
                speeds = ", ".join(f"{name} {ips:,.0f} images/s" for name, ips in choice.images_per_second.items())
                model = args.model or f"bundled {precision} model"
                speeds = speeds or _nothing_to_compare()
                small = (
                    f"; calls of fewer than {choice.cpu_below} images, or that OpenVINO would pad, run on "
                    f"the CPU provider"
                    if choice.provider == "openvino" and choice.cpu_below
                    else ""
                )
                emit(f"{model}, batch size {batch_size or 'default'}: {choice.provider} ({speeds}){small}")
    return wrote


def _nothing_to_compare() -> str:
    """Why no trial ran: what ``auto`` uses instead, and how to get OpenVINO where it is missing."""
    from . import acceleration
    from .openvino import INSTALL_HINT, plugin_installed

    if acceleration._cuda_offered():  # noqa: SLF001 - the same test auto makes
        return "nothing measured: onnxruntime offers CUDA, which auto uses"
    if not plugin_installed():
        return f"nothing measured: OpenVINO is not installed ({INSTALL_HINT}); auto uses the CPU provider"
    return "nothing measured: the OpenVINO plugin cannot be used here (see the warning); auto uses the CPU provider"


def _retune(model: str | None, *, precision: str | None, batch_size: int | None) -> Any:
    """Run the provider trial for ``model`` again and cache its answer; returns the ``ProviderChoice``
    (``"cpu"`` with no figures when OpenVINO is not available or onnxruntime offers CUDA)."""
    from . import acceleration, tuning
    from .model_source import load_model
    from .predictor import DigitClassifier

    source = load_model(model, precision=precision)  # type: ignore[arg-type]

    def pinned(provider: str) -> DigitClassifier:
        return DigitClassifier(
            source,  # type: ignore[arg-type]  # a loaded ModelSource passes through load_model
            providers=provider,
            precision=precision,  # type: ignore[arg-type]
            batch_size=batch_size,
        )

    _, choice = acceleration.pick_provider(
        source.data, "auto", bf16=False, batch_size=batch_size, pinned=pinned, remeasure=True
    )
    return choice or tuning.ProviderChoice("cpu", {}, "", False)


def _retune_bf16(model: str | None) -> Any:
    """Forget the cached bf16 verdicts, evaluate ``model`` (default: the bundled fp32 model) again and return
    its ``Bf16Report``.

    Raises:
        GateError: If bf16 fails the gate; ProviderError if it cannot run here.
    """
    from . import acceleration, tuning
    from .model_source import load_model
    from .predictor import DigitClassifier

    tuning.TuneCache().clear("bf16-gate")
    acceleration.forget_checks()
    source = load_model(model, precision="fp32")
    # Building the bf16 classifier runs the gate afresh; the gate_bf16 call below then reads its cached report.
    bf16 = DigitClassifier(source, providers="openvino", precision="bf16")  # type: ignore[arg-type]
    fp32 = DigitClassifier(source, providers="cpu")  # type: ignore[arg-type]
    return acceleration.gate_bf16(
        acceleration.model_sha256(source.data), lambda: fp32.predict_proba, lambda: bf16.predict_proba
    )
