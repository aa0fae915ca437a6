"""Uploaded images and CSVs -> the uint8 digits the model sees (for ``POST /v1/predict``).

Image bodies are checked against a pixel limit before Pillow decodes them, so a
small compressed file that unpacks to gigabytes (a decompression bomb) is
refused from its header alone.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CsvFormatError
from .protocol import BadRequest

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

__all__ = ["prepare_image", "read_csv_body", "DEFAULT_MAX_IMAGE_PIXELS"]

#: Largest image accepted, in pixels (width x height): a 24-megapixel photo of a digit passes.
DEFAULT_MAX_IMAGE_PIXELS = 6000 * 4000


def prepare_image(data: bytes, *, what: str,
                  max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Decode one uploaded image and prepare it as an MNIST digit.

    Args:
        data: The file's bytes (PNG, JPEG, GIF, BMP, TIFF, WebP: what Pillow reads).
        what: How error messages name it (``"request body"``, ``"part 'file'"``).
        max_pixels: Largest width x height accepted.

    Returns:
        ``(digit, warnings)``: uint8 (28, 28), light digit on black; and
        one-line notes about what was done to the image.

    Raises:
        BadRequest: If the bytes are not an image Pillow can read, or the
            image is larger than ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadRequest(f"{what}: expected an image, got an empty body")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(f"{what}: not an image Pillow can read ({_first_line(exc)})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadRequest(f"{what}: expected at most {max_pixels:,} pixels, got {width}x{height} "
                         f"({width * height:,}); send a smaller image")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadRequest(f"{what}: the image cannot be decoded ({_first_line(exc)})") from None
    return _plain_digit(image, notes), notes


def _plain_digit(image: PilImage, notes: list[str]) -> np.ndarray:
    """A plain conversion: grey, 28x28, light digit on black.

    Placeholder until the runtime's ``preprocess_digit`` (cropping, 20x20 box,
    centring by centre of mass, as MNIST was made) lands; it replaces this.
    """
    from PIL import Image

    grey = image.convert("L")
    if grey.size != (28, 28):
        grey = grey.resize((28, 28), Image.Resampling.LANCZOS)
        notes.append(f"resized from {image.size[0]}x{image.size[1]} to 28x28 without cropping or centring")
    digit = np.asarray(grey, dtype=np.uint8)
    if digit.mean() > 127:
        digit = 255 - digit
        notes.append("inverted: the image looks like a dark digit on a light background")
    return np.ascontiguousarray(digit)


def read_csv_body(data: bytes) -> np.ndarray:
    """Parse a Kaggle CSV body (test.csv or train.csv, plain or gzipped) with the runtime's reader.

    Args:
        data: The CSV's bytes.

    Returns:
        uint8 (N, 28, 28).

    Raises:
        BadRequest: With line and column, as the CLI reports them, naming the request body.
    """
    from ..runtime import read_kaggle_csv

    handle = tempfile.NamedTemporaryFile(prefix="mnist-onnx-", suffix=".csv", delete=False)
    try:
        with handle:
            handle.write(data)
        try:
            batch = read_kaggle_csv(handle.name)
        except CsvFormatError as exc:
            where = "request body"
            if exc.line is not None:
                where += f", line {exc.line}"
            if exc.column is not None:
                where += f", column {exc.column}"
            raise BadRequest(f"{where}: {exc.problem}") from None
    finally:
        os.unlink(handle.name)
    return batch.images.reshape(len(batch.images), 28, 28)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__
