"""``mnist-onnx predict --engine ray``: the Ray Data path of the predict command.

Kept apart from :mod:`.cli` so that module stays standard-library only and
the local path never imports Ray.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .._progress import status_printer
from ..errors import MnistOnnxError
from .cli import SAMPLE, summary_lines


def run_predict(args: argparse.Namespace) -> int:
    """Score ``args.csv`` (paths and globs) with :func:`~.ray_engine.predict_csv_files`; print a summary."""
    from .ray_engine import predict_csv_files

    if args.proba and not (args.out or args.out_dir):
        raise MnistOnnxError("--proba adds columns to the output files: give --out PATH or --out-dir DIR too")
    quiet = args.quiet
    _configure_ray_data(quiet=quiet)
    inputs = args.csv or [str(SAMPLE)]
    frame = predict_csv_files(
        inputs, args.model, output=args.out, output_dir=args.out_dir, proba=args.proba,
        providers=args.provider, threads=args.threads, precision=args.precision, batch_size=args.batch_size,
        workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.address,
        ray_init_options={"logging_level": logging.ERROR if quiet else logging.WARNING, "log_to_driver": not quiet},
    )
    emit = status_printer(quiet, stream=sys.stdout)
    if emit:
        files = frame.attrs["files"]
        source = Path(files[0][0]) if len(files) == 1 else Path(f"{len(files)} files")
        for line in summary_lines(frame, source, args.out, sample=not args.csv):
            emit(line)
        if args.out_dir:
            emit(f"wrote {len(files)} per-file outputs to {args.out_dir} (NAME.predictions.csv)")
    return 0


def _configure_ray_data(*, quiet: bool) -> None:
    from .._extras import require

    require("ray.data", "ray")  # configures its loggers on import, so set the level after
    from ray.data import DataContext

    # Ray Data logs every stage at INFO; the summary says what happened.  Its
    # progress bars stay on a terminal (off a terminal they are INFO lines).
    logging.getLogger("ray.data").setLevel(logging.ERROR if quiet else logging.WARNING)
    DataContext.get_current().enable_progress_bars = not quiet
