"""The ``mnist-onnx`` command.

Each subcommand's options live beside the code it runs
(``mnist_onnx/<area>/cli.py``); those modules import only the standard library
at the top, so ``--help`` and ``--version`` answer without TensorFlow or
onnxruntime.  This module owns the exit codes: 0 success, 1 a user error (one
line on stderr, no traceback), 2 bad usage, 3 a gate refused an export or
quantization, 4 an optional extra is missing, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM, as sent by ``kill`` and by job schedulers).  Both
interruptions unwind like an exception, so every atomic write in progress
removes its temporary file and no output is left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from . import __version__
from .errors import GateError, MissingExtraError, MnistOnnxError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GATE = 3
EXIT_MISSING_EXTRA = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks and atomic writes clean up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the command runs.

    Python's default for SIGTERM is to die on the spot, which would leave an
    atomic write's temporary file behind.  Only the main thread may set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    from .bench import cli as bench_cli
    from .export import cli as export_cli
    from .runtime import cli as runtime_cli
    from .runtime import tune_cli
    from .serve import cli as serve_cli
    from .train import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="mnist-onnx",
        description="Train the Kaggle Digit Recognizer CNN, export it to ONNX, and run it with onnxruntime.",
        epilog="Run 'mnist-onnx COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mnist-onnx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_cli.register(sub)
    export_cli.register(sub)
    runtime_cli.register(sub)
    tune_cli.register(sub)
    bench_cli.register(sub)
    serve_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mnist-onnx`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what was asked for, recorded in reports as the command line
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with _sigterm_unwinds():
            return int(args.handler(args) or EXIT_OK)
    except GateError as exc:
        print(f"mnist-onnx {args.command}: refused: {exc}", file=sys.stderr)
        return EXIT_GATE
    except MissingExtraError as exc:
        print(f"mnist-onnx {args.command}: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except MnistOnnxError as exc:
        print(f"mnist-onnx {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        print(
            f"mnist-onnx {args.command}: {'terminated' if terminated else 'interrupted'}; no partial output was kept",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
