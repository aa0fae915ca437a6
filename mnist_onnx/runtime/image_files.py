"""Finding digit images on disk, telling them from CSVs, and drawing a contact sheet.

Images are recognised by their first bytes (their "magic number"), not by their
extension: a PNG saved as ``digit.jpg`` or without an extension is still found,
and a text file named ``x.png`` is not taken for an image.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._fileio import atomic_path
from ..errors import ImageError
from .images import load_image

__all__ = [
    "IMAGE_FORMATS",
    "sniff_image",
    "describe_file",
    "expand_image_inputs",
    "SheetEntry",
    "write_contact_sheet",
    "write_prepared",
]

#: The formats accepted, as named in messages.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WebP")

_GLOB_CHARS = frozenset("*?[")


def sniff_image(head: bytes) -> str | None:
    """The image format that a file's first bytes announce, or None.

    Signatures: PNG (ISO/IEC 15948), JPEG (SOI marker FF D8 FF), GIF87a/GIF89a,
    BMP ("BM"), TIFF ("II*\\0" little-endian, "MM\\0*" big-endian), WebP (a
    RIFF container of type "WEBP").

    Args:
        head: At least the file's first 12 bytes.

    Returns:
        One of :data:`IMAGE_FORMATS`, or None.

    >>> sniff_image(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
    'PNG'
    >>> sniff_image(b"label,pixel0,pixel1") is None
    True
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (also .xlsx, .docx, .npz)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x08", "an ONNX or other protobuf file"),
    (b"\x00\x00\x01\x00", "a Windows icon"),
    (b"<?xml", "an XML document"),
    (b"<svg", "an SVG drawing (vector graphics; save it as PNG)"),
    (b"\x00\x00\x08\x03", "an MNIST IDX image file"),
    (b"\x00\x00\x08\x01", "an MNIST IDX label file"),
    (b"BZh", "a bzip2-compressed file"),
)


def describe_file(path: str | os.PathLike[str]) -> str:
    """A few words saying what a file that is neither an image nor a CSV seems to be.

    Args:
        path: The file.

    Returns:
        For example ``"a PDF document"``, ``"a HEIC photo (convert it to JPEG or PNG)"``,
        ``"text"`` or ``"binary data"``.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    image = sniff_image(head)
    if image is not None:
        return f"a {image} image"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "a HEIC/AVIF photo (convert it to JPEG or PNG)"
    for signature, what in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return what
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "text"


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file whose first bytes are those of an accepted image format."""
    try:
        with open(path, "rb") as handle:
            return sniff_image(handle.read(16)) is not None
    except OSError:
        return False


def expand_image_inputs(inputs: Iterable[str | os.PathLike[str]], *, recursive: bool = False) -> list[str]:
    """Expand files, folders and glob patterns into a list of paths, in input order.

    A file is kept as given (whatever it is: the caller decides between image
    and CSV).  A folder contributes its image files (recognised by content),
    sorted by name; with ``recursive`` its subfolders too, depth first in name
    order.  A pattern (``*``, ``?``, ``[...]``; ``**`` with ``recursive``)
    contributes its matches, sorted; matched folders are expanded like folders.

    Args:
        inputs: Paths and patterns, in the order the user gave them.
        recursive: Descend into subfolders.

    Returns:
        Paths as strings, each spelled as given or as found (folder + name).

    Raises:
        ImageError: An input does not exist, a pattern matches nothing, or a
            folder holds no image.
    """
    found: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if os.path.isdir(text):
            images = _folder_images(text, recursive)
            if not images:
                raise ImageError(
                    f"{text}: folder holds no image ({', '.join(IMAGE_FORMATS)})"
                    + ("" if recursive else "; pass --recursive to look in subfolders")
                )
            found.extend(images)
        elif os.path.exists(text):
            found.append(text)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=recursive))
            if not matches:
                raise ImageError(f"{text}: pattern matches no file")
            for match in matches:
                found.extend(_folder_images(match, recursive) if os.path.isdir(match) else [match])
        else:
            raise ImageError(f"{text}: no such file or folder")
    return found


def _folder_images(folder: str, recursive: bool) -> list[str]:
    images: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise ImageError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    for entry in entries:
        path = os.path.join(folder, entry.name)
        if entry.is_dir():
            if recursive and not entry.name.startswith("."):
                images.extend(_folder_images(path, recursive))
        elif entry.is_file() and is_image_file(path):
            images.append(path)
    return images


@dataclass(frozen=True)
class SheetEntry:
    """One tile of a contact sheet.

    Attributes:
        name: Caption (a file name); long names are shortened from the left.
        original: The input as the user gave it (anything :func:`~.images.load_image` accepts),
            or None to show only the prepared image.
        prepared: What the model saw, uint8 (28, 28).
        label: The predicted label.
        confidence: Its probability, 0-1.
    """

    name: str
    original: Any
    prepared: np.ndarray
    label: Any
    confidence: float


_TILE = 96
_CAPTION = 30


def write_contact_sheet(
    destination: str | os.PathLike[str], entries: Sequence[SheetEntry], *, columns: int = 6
) -> Path:
    """Draw a PNG contact sheet: each input, the 28x28 image the model saw, the label and confidence.

    Each tile shows the input (fitted in 96x96, on grey), the prepared image
    enlarged 3x without smoothing (so its pixels can be seen), and the caption
    "name", "label  confidence".  Confidence under 50% is drawn in red.

    Args:
        destination: The PNG file to write (atomically).
        entries: The tiles, in order.
        columns: Tiles per row.

    Returns:
        The path written.

    Raises:
        ImageError: ``entries`` is empty.
        MnistOnnxError: The destination cannot be written.
    """
    if not entries:
        raise ImageError("no images to draw on the contact sheet")
    columns = max(1, min(columns, len(entries)))
    rows = -(-len(entries) // columns)
    tile_w, tile_h = 2 * _TILE + 12, _TILE + _CAPTION + 8
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, entry in enumerate(entries):
        x, y = (index % columns) * tile_w + 4, (index // columns) * tile_h + 4
        draw.rectangle((x, y, x + _TILE - 1, y + _TILE - 1), fill=(200, 200, 200))
        if entry.original is not None:
            try:
                thumb = load_image(entry.original).convert("RGB")
                thumb.thumbnail((_TILE, _TILE), Image.Resampling.LANCZOS)
                factor = _TILE // max(thumb.size)
                if factor > 1:  # a small input (28x28) is enlarged pixel for pixel, like the prepared one
                    thumb = thumb.resize((thumb.width * factor, thumb.height * factor), Image.Resampling.NEAREST)
                sheet.paste(thumb, (x + (_TILE - thumb.width) // 2, y + (_TILE - thumb.height) // 2))
            except ImageError:
                draw.text((x + 4, y + _TILE // 2), "unreadable", fill=(160, 0, 0), font=font)
        prepared = Image.fromarray(np.asarray(entry.prepared, dtype=np.uint8), mode="L")
        sheet.paste(
            prepared.resize((84, 84), Image.Resampling.NEAREST).convert("RGB"),
            (x + _TILE + 4 + (_TILE - 84) // 2, y + (_TILE - 84) // 2),
        )
        name = entry.name if len(entry.name) <= 30 else "..." + entry.name[-27:]
        colour = (0, 0, 0) if entry.confidence >= 0.5 else (190, 0, 0)
        draw.text((x, y + _TILE + 2), name, fill=(60, 60, 60), font=font)
        draw.text((x, y + _TILE + 15), f"{entry.label}   {entry.confidence:.1%}", fill=colour, font=font)
    with atomic_path(destination, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return Path(destination)


def write_prepared(folder: str | os.PathLike[str], name: str, prepared: np.ndarray) -> Path:
    """Save a prepared 28x28 image as ``folder/<name>.png`` (atomically); returns the path.

    ``name`` is reduced to its file name without extension, so inputs from
    different folders with the same name overwrite each other; callers that
    care pass a unique name (e.g. prefixed with the input's index).
    """
    stem = Path(name).stem or "image"
    destination = Path(folder) / f"{stem}.png"
    with atomic_path(destination, suffix=".png") as tmp:
        Image.fromarray(np.asarray(prepared, dtype=np.uint8), mode="L").save(tmp, format="PNG")
    return destination
