"""Predicting digit images: prepare each picture, score the batch, and say what the model saw."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import ImageError
from .image_files import SheetEntry, write_contact_sheet, write_prepared
from .images import InvertMode, preprocess_digit

__all__ = ["PreparedImages", "prepare_images", "image_frame", "write_image_outputs", "predict_images", "output_folder"]


@dataclass(frozen=True)
class PreparedImages:
    """Pictures turned into model input.

    Attributes:
        names: One name per picture: the path as given, or ``image<i>`` for in-memory images.
        originals: The inputs as given (paths, bytes, PIL images or arrays).
        pixels: uint8 (N, 28, 28), light digits on black.
    """

    names: tuple[str, ...]
    originals: tuple[Any, ...]
    pixels: np.ndarray


def _name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"image{index}"


def prepare_images(
    images: Any, *, invert: str | bool = "auto", preprocess: bool = True, progress: Callable[[int], None] | None = None
) -> PreparedImages:
    """Run :func:`~.images.preprocess_digit` over pictures, in order.

    Args:
        images: One picture (a path, bytes, a PIL image, a 2-D or colour array)
            or a sequence of them.
        invert: Passed to :func:`~.images.preprocess_digit`.
        preprocess: Passed to :func:`~.images.preprocess_digit`.
        progress: Called with the number of pictures prepared so far, after each one
            (a phone photo takes tens of milliseconds: the CLI's progress bar).

    Returns:
        The prepared images with their names.

    Raises:
        ImageError: No pictures, or one cannot be read or holds no digit (the
            message names it).
    """
    items = _items(images)
    if not items:
        raise ImageError("expected at least one image, got none")
    mode = cast(InvertMode, invert)  # checked by preprocess_digit
    prepared = []
    for done, item in enumerate(items, start=1):
        prepared.append(preprocess_digit(item, invert=mode, preprocess=preprocess))
        if progress is not None:
            progress(done)
    pixels = np.stack(prepared)
    return PreparedImages(tuple(_name(item, i) for i, item in enumerate(items)), tuple(items), pixels)


def _items(images: Any) -> list[Any]:
    """One picture or many: a path, bytes, a PIL image, a 2-D array or an (H, W, 1|3|4) array is one."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or images.ndim == 3 and images.shape[-1] in (1, 3, 4):
            return [images]
        if images.ndim in (3, 4):
            return list(images)
        raise ImageError(f"expected an image or a batch of images, got an array shaped {images.shape}")
    try:
        return list(images)
    except TypeError:
        raise ImageError(
            f"expected a path, bytes, a PIL image, an array or a list of them, got {type(images).__name__}"
        ) from None


def image_frame(
    prepared: PreparedImages,
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    proba: bool,
    class_labels: tuple[Any, ...] = tuple(range(10)),
) -> pd.DataFrame:
    """The predictions as a frame: ``path,Label`` (+ ``p<label>``, ``confidence`` with ``proba``), in input order.

    Args:
        prepared: What :func:`prepare_images` returned.
        probabilities: float (N, classes).
        labels: The predicted label of each image.
        proba: Add one probability column per class and the confidence.
        class_labels: The label of each probability column (names the columns).
    """
    frame = pd.DataFrame({"path": list(prepared.names), "Label": labels})
    if proba:
        for column, label in enumerate(class_labels):
            frame[f"p{label}"] = probabilities[:, column]
        frame["confidence"] = probabilities.max(axis=1)
    return frame


def write_image_outputs(
    prepared: PreparedImages,
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    save_prepared: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    on_written: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write what the model saw (``save_prepared``) and a contact sheet (``report``).

    Prepared images are named ``<index>_<input name>.png`` so that inputs with
    the same name in different folders do not overwrite each other.

    Args:
        prepared: What :func:`prepare_images` returned.
        probabilities: float (N, classes).
        labels: The predicted label of each image.
        save_prepared: Folder for the 28x28 PNGs (created if missing).
        report: Folder for ``contact_sheet.png`` (created if missing).
        on_written: Called with each path written.

    Returns:
        The paths written.
    """
    written: list[Path] = []
    width = len(str(len(prepared.names)))
    if save_prepared is not None:
        folder = output_folder(save_prepared)
        for index, (name, pixels) in enumerate(zip(prepared.names, prepared.pixels, strict=True)):
            written.append(write_prepared(folder, f"{index:0{width}d}_{Path(name).stem}", pixels))
    if report is not None:
        folder = output_folder(report)
        entries = [
            SheetEntry(Path(name).name, original, pixels, label, float(row.max()))
            for name, original, pixels, label, row in zip(
                prepared.names, prepared.originals, prepared.pixels, labels, probabilities, strict=True
            )
        ]
        written.append(write_contact_sheet(folder / "contact_sheet.png", entries))
    if on_written is not None:
        for path in written:
            on_written(path)
    return written


def output_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` if missing; returns it.

    Raises:
        ImageError: It cannot be created (e.g. a file of that name exists).
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    return folder


def predict_images(
    classifier: Any,
    images: Any,
    *,
    invert: str | bool = "auto",
    preprocess: bool = True,
    proba: bool = False,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Predict pictures of digits with a :class:`~.predictor.DigitClassifier`, in input order.

    Each picture goes through :func:`~.images.preprocess_digit` (MNIST's own
    preparation; ``invert`` and ``preprocess`` are passed on).

    Args:
        classifier: The classifier.
        images: One picture or a sequence: paths, bytes, PIL images, arrays of any size.
        invert: ``"auto"``, ``"yes"`` or ``"no"`` (see :func:`~.images.preprocess_digit`).
        preprocess: False for pictures already prepared like MNIST's.
        proba: Add ``p<label>`` and ``confidence`` columns.
        progress: Called with the pictures prepared so far (see :func:`prepare_images`).

    Returns:
        A DataFrame ``path,Label`` (+ probabilities), one row per picture; in-memory
        pictures are named ``image<i>``.  ``attrs["prepared"]`` holds what the model
        saw: uint8 (N, 28, 28).

    Raises:
        ImageError: A picture cannot be read, is too large, or holds no digit.
    """
    from .contract import label_values

    prepared = prepare_images(images, invert=invert, preprocess=preprocess, progress=progress)
    probabilities = classifier.predict_proba(prepared.pixels)
    labels = label_values(classifier.class_labels, probabilities.argmax(axis=1))
    frame = image_frame(prepared, probabilities, labels, proba=proba, class_labels=classifier.class_labels)
    frame.attrs["prepared"] = prepared.pixels
    return frame
