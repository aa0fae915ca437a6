"""Pictures of a prediction run: the confusion matrix and grids of digits (the ``plot`` extra, matplotlib).

People would rather look at the digits a model got wrong than read a list of
row numbers.  This module draws with matplotlib's object-oriented API (a
:class:`~matplotlib.figure.Figure` rendered by the Agg canvas, never
``pyplot``), so it sets no global state, picks no interactive backend and is
safe to call from any thread.  matplotlib is imported only when a picture is
drawn; without it, :class:`~mnist_onnx.errors.MissingExtraError` names
``pip install 'mnist-onnx[plot]'``.  Every file is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._extras import require
from ._fileio import write_bytes_atomic
from .errors import MnistOnnxError

__all__ = ["require_matplotlib", "confusion_matrix_png", "digit_grid_png"]

#: Digits drawn at most in one grid; the title says how many there were.
MAX_GRID_DIGITS = 100
_DPI = 100


def require_matplotlib() -> Any:
    """Import matplotlib, or raise :class:`~mnist_onnx.errors.MissingExtraError` naming the ``plot`` extra."""
    return require("matplotlib", "plot")


def _figure(width_in: float, height_in: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, destination: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    write_bytes_atomic(destination, buffer.getvalue())
    return Path(destination)


def confusion_matrix_png(
    confusion: np.ndarray, labels: Sequence[Any], destination: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Draw a confusion matrix with its counts, mistakes coloured on their own scale.

    The diagonal (the correct answers) dwarfs every mistake, so the
    off-diagonal cells get their own colour scale and the diagonal is drawn
    in a neutral tint: the confusions a reader looks for stand out.

    Args:
        confusion: Integer counts, shape (classes, classes): row = true label, column = predicted.
        labels: The class label of each row and column.
        destination: The PNG file to write (replaced only when complete).
        title: Shown above the matrix.

    Returns:
        The path written.

    Raises:
        MnistOnnxError: If ``confusion`` is not square with one row per label, or
            the destination cannot be written.
        MissingExtraError: If matplotlib is not installed.
    """
    counts = np.asarray(confusion)
    classes = len(labels)
    if counts.shape != (classes, classes):
        raise MnistOnnxError(f"expected a {classes}×{classes} confusion matrix, got shape {counts.shape}")
    figure = _figure(1.0 + 0.55 * classes, 0.8 + 0.5 * classes)
    axes = figure.add_subplot()
    diagonal = np.eye(classes, dtype=bool)
    mistakes = np.ma.masked_where(diagonal | (counts == 0), counts)
    axes.imshow(np.ma.masked_where(~diagonal, np.ones_like(counts)), cmap="Greys", vmin=0, vmax=8)
    worst = int(mistakes.max()) if mistakes.count() else 1
    axes.imshow(mistakes, cmap="Reds", vmin=0, vmax=max(worst, 1))
    for row in range(classes):
        for column in range(classes):
            value = int(counts[row, column])
            if value or row == column:
                strong = row != column and value > worst / 2
                axes.text(
                    column,
                    row,
                    f"{value:,}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if strong else "black",
                )
    axes.set_xticks(range(classes), [str(label) for label in labels])
    axes.set_yticks(range(classes), [str(label) for label in labels])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title, fontsize=10)
    return _save(figure, destination)


def digit_grid_png(
    images: np.ndarray,
    captions: Sequence[str],
    destination: str | os.PathLike[str],
    *,
    title: str = "",
    columns: int = 10,
) -> Path:
    """Draw 28×28 digits in a grid, each with a caption, as MNIST stores them (light on black).

    Args:
        images: uint8 pixels, shape (N, 28, 28), (N, 28, 28, 1) or (N, 784); at most
            :data:`MAX_GRID_DIGITS` are drawn (the first ones).
        captions: One short caption per image (e.g. ``"3→5 87%"``).
        destination: The PNG file to write (replaced only when complete).
        title: Shown above the grid; with no image, the picture says so instead.
        columns: Digits per row.

    Returns:
        The path written.

    Raises:
        MnistOnnxError: If the images are not 28×28 or the captions do not match
            them, or the destination cannot be written.
        MissingExtraError: If matplotlib is not installed.
    """
    pixels = np.asarray(images)
    if pixels.ndim == 2 and pixels.shape[1] == 784 or pixels.ndim == 4 and pixels.shape[1:] == (28, 28, 1):
        pixels = pixels.reshape(-1, 28, 28)
    if pixels.ndim != 3 or pixels.shape[1:] != (28, 28):
        raise MnistOnnxError(f"expected images shaped (N, 28, 28), (N, 28, 28, 1) or (N, 784), got {pixels.shape}")
    if len(captions) != len(pixels):
        raise MnistOnnxError(f"expected one caption per image, got {len(captions)} for {len(pixels)} images")
    shown = min(len(pixels), MAX_GRID_DIGITS)
    columns = max(1, min(columns, shown or 1))
    rows = max(1, -(-shown // columns))
    figure = _figure(1.2 * columns, 1.45 * rows + (0.4 if title else 0))
    if title:
        figure.suptitle(title, fontsize=10)
    if not shown:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no digits to show", ha="center", va="center")
        return _save(figure, destination)
    for index in range(shown):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(pixels[index], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes.set_title(captions[index], fontsize=8)
        axes.axis("off")
    return _save(figure, destination)
