"""The package's exception types.

Every error caused by what a user handed us (a file, an array, an option) is a
:class:`MnistOnnxError`, itself a :class:`ValueError`, so callers can catch one
type.  The CLI turns these into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

__all__ = [
    "MnistOnnxError",
    "CsvFormatError",
    "ModelError",
    "DataError",
    "ImageError",
    "GateError",
    "MissingExtraError",
]


class MnistOnnxError(ValueError):
    """Base class of every user-facing error raised by mnist-onnx."""


class CsvFormatError(MnistOnnxError):
    """A Kaggle-format CSV is malformed.

    Attributes:
        path: The file that was being read.
        line: 1-based line number in that file (the header is line 1), or None
            when the problem is not tied to one line (an empty file).
        column: The column's header name (``pixel17``, ``label``), or None.
    """

    def __init__(self, path: str, line: int | None, column: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.column = column
        self.problem = problem
        where = self.path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {problem}")


class ModelError(MnistOnnxError):
    """A model file or model bytes cannot be used as a digit classifier."""


class DataError(MnistOnnxError):
    """Downloaded or in-memory data failed a check (hash, pickle contents, array shape)."""


class ImageError(MnistOnnxError):
    """An image cannot be used as a digit: unreadable, not an image, too large, or blank."""


class GateError(MnistOnnxError):
    """An export or quantization gate failed; nothing was written."""


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the pip command that fixes it."""

    def __init__(self, extra: str, missing: str):
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"this needs the '{extra}' extra ({missing} is not installed): "
            f"pip install 'mnist-onnx[{extra}]'"
        )
