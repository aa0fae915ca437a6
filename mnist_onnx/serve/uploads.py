"""Uploaded images and CSVs -> the uint8 digits the model sees (for ``POST /v1/predict``).

Images go through the runtime's MNIST preparation; their size is checked
against a pixel limit before Pillow decodes them, so a small compressed file
that unpacks to gigabytes (a decompression bomb) is refused from its header.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

from ..errors import CsvFormatError
from .protocol import BadRequest

__all__ = ["prepare_image", "read_csv_body", "DEFAULT_MAX_IMAGE_PIXELS"]

#: Largest image accepted, in pixels (width x height): the runtime's ``MAX_IMAGE_PIXELS``, as ``predict`` uses.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def prepare_image(
    data: bytes, *, what: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, list[str]]:
    """Decode one uploaded image and prepare it as an MNIST digit (:func:`mnist_onnx.runtime.images.preprocess_digit`).

    Args:
        data: The file's bytes (PNG, JPEG, GIF, BMP, TIFF, WebP: what Pillow reads).
        what: How error messages name it (``"request body"``, ``"part 'file' (a.png)"``).
        max_pixels: Largest width x height accepted; checked from the image's
            header, before it is decoded.

    Returns:
        ``(digit, notes)``: uint8 (28, 28), light digit on black; and
        one-line notes about the image for the person who sent it.

    Raises:
        BadRequest: If the bytes are not an image Pillow can read, the image is
            larger than ``max_pixels``, or it holds no digit.
    """
    from ..errors import ImageError
    from ..runtime.images import preprocess_digit

    if not data:
        raise BadRequest(f"{what}: expected an image, got an empty body")
    try:
        digit = preprocess_digit(data, max_pixels=max_pixels)
    except ImageError as exc:
        # The runtime names bytes by their size; the request names the part.
        problem = str(exc).split(": ", 1)[-1].splitlines()[0]
        problem = _OBJECT_REPR.sub("", problem)  # Pillow names the in-memory file by its address
        raise BadRequest(f"{what}: {problem}") from None
    except SyntaxError as exc:  # Pillow's PNG reader raises it for a chunk broken after the header
        raise BadRequest(f"{what}: cannot decode the image ({str(exc).splitlines()[0][:80]})") from None
    return np.ascontiguousarray(digit, dtype=np.uint8), []


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
