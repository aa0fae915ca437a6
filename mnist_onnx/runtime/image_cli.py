"""``mnist-onnx predict`` over image files: sorting inputs into CSVs and images, and the image run.

Imported by the CLI only when it runs (Pillow and numpy are not needed for ``--help``).
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MnistOnnxError
from .image_files import IMAGE_FORMATS, describe_file, expand_image_inputs, sniff_image

__all__ = ["sort_inputs", "run_images", "ACCEPTED"]

#: What ``predict`` accepts, as said in messages.
ACCEPTED = f"a Kaggle CSV (optionally gzipped) or an image ({', '.join(IMAGE_FORMATS)})"


def _kind(path: str) -> str:
    """``"image"``, ``"csv"`` (text or gzip: the CSV reader checks the rest) or ``"other"``."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "csv"  # a pipe or a device is never opened here (it could block); the CSV reader says what it is
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except IsADirectoryError:
        return "other"
    except OSError:
        return "csv"  # the CSV reader reports a missing or unreadable file with its own message
    if sniff_image(head) is not None:
        return "image"
    if head.startswith(b"\x1f\x8b"):
        return "csv"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the block
            return "other"
    return "csv" if head.strip() else "other"


def sort_inputs(items: list[str], *, recursive: bool = False) -> tuple[list[str], list[str]]:
    """Expand ``items`` (files, folders, globs) and sort them into CSVs and images, keeping their order.

    Args:
        items: What the user gave on the command line.
        recursive: Descend into subfolders of folders (and let ``**`` match them).

    Returns:
        ``(csvs, images)``.

    Raises:
        MnistOnnxError: An input is neither a CSV nor an image (the message says
            what it seems to be and what is accepted), or a folder or pattern
            holds nothing usable.
    """
    csvs: list[str] = []
    images: list[str] = []
    expanded = [
        path
        for item in items
        # An empty name goes to the CSV reader, which reports it like any bad path.
        for path in ([item] if item == "" else expand_image_inputs([item], recursive=recursive))
    ]
    for path in expanded:
        kind = _kind(path)
        if kind == "image":
            images.append(path)
        elif kind == "csv":
            csvs.append(path)
        else:
            what = "a folder" if Path(path).is_dir() else describe_file(path)
            raise MnistOnnxError(f"{path}: is {what}; expected {ACCEPTED}")
    return csvs, images


def run_images(args: argparse.Namespace, images: list[str], classifier: Any, emit: Callable[[str], None] | None) -> int:
    """Predict image files with ``classifier``; write ``path,Label`` (+ probabilities) to --out or stdout.

    Args:
        args: The parsed ``predict`` options (``out``, ``proba``, ``invert`` (None: auto),
            ``no_preprocess``, ``save_prepared``, ``report``).
        images: The image paths, in input order.
        classifier: A :class:`~.predictor.DigitClassifier`.
        emit: Prints a status line, or None when quiet.

    Returns:
        The exit code (0).
    """
    from ._predict_io import ProgressBar
    from .image_predict import PreparedImages, output_folder, predict_images, write_image_outputs
    from .results import write_csv

    for folder in (args.save_prepared, args.report):  # before anything is written, so a bad one leaves nothing
        if folder is not None:
            output_folder(folder)
    # Preparing a phone photo takes tens of milliseconds: a folder of them shows a bar (terminal only, after 0.5 s).
    bar = ProgressBar(sys.stderr, len(images), unit="images", desc="preparing") if emit else None
    try:
        frame = predict_images(
            classifier,
            images,
            invert=args.invert or "auto",
            preprocess=not args.no_preprocess,
            proba=True,
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    probabilities = frame.drop(columns=["path", "Label", "confidence"]).to_numpy()
    if not args.proba:
        frame = frame[["path", "Label"]]
    if args.out:
        write_csv(frame, args.out)  # the one prediction writer: atomic, gzip for a .gz name
    else:
        frame.to_csv(sys.stdout, index=False, lineterminator="\n")
    prepared = PreparedImages(tuple(images), tuple(images), frame.attrs["prepared"])
    written = write_image_outputs(
        prepared, probabilities, frame["Label"].to_numpy(), save_prepared=args.save_prepared, report=args.report
    )
    if emit and not args.out:
        # The predictions went to stdout: keep it a clean CSV, status goes to stderr.
        def emit(line: str) -> None:
            print(line, file=sys.stderr)

    if emit:
        model = getattr(classifier, "model_name", "the model")
        on = f" on {classifier.provider_for(len(images))}" if hasattr(classifier, "provider_for") else ""
        emit(f"predicted {len(images):,} image{'s' if len(images) != 1 else ''} with {model}{on}")
        if args.out:
            emit(
                f"wrote {args.out} ({', '.join(frame.columns[:2])}{', ...' if args.proba else ''}; {len(frame):,} rows)"
            )
        if args.save_prepared:
            emit(f"wrote {len(images):,} prepared 28x28 images to {args.save_prepared}")
        if args.report:
            emit(f"wrote {written[-1]} (each input, what the model saw, label and confidence)")
    return 0
