"""The package's exception types.

Every error caused by what a user handed us (a file, an array, an option) is a
:class:`MnistOnnxError`, itself a :class:`ValueError`, so callers can catch one
type.  The CLI turns these into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "MnistOnnxError",
    "CsvFormatError",
    "CsvFilesError",
    "ModelError",
    "ProviderError",
    "ProviderFallbackWarning",
    "CacheWarning",
    "DataError",
    "ImageError",
    "ContractWarning",
    "InvertedDigitsWarning",
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


class CsvFilesError(MnistOnnxError):
    """Some of several input files are malformed; the others were scored.

    Raised by ``mnist_onnx.runtime.ray_engine.predict_csv_files`` after the
    good files were scored and their per-file outputs written.

    Attributes:
        errors: One :class:`CsvFormatError` per bad file, in input order.
        written: The per-file outputs that were written (the good files').
        scored: How many files were scored.
    """

    def __init__(self, errors: Sequence[CsvFormatError], written: Sequence[Path], scored: int):
        self.errors = tuple(errors)
        self.written = tuple(written)
        self.scored = scored
        total = scored + len(self.errors)
        bad = "; ".join(str(e) for e in self.errors)
        kept = (
            f"the other {scored} files' predictions were written to their per-file outputs"
            if self.written
            else f"the other {scored} files were scored (no per-file outputs asked for)"
        )
        super().__init__(
            f"{len(self.errors)} of {total} input files could not be read: {bad}; "
            f"{kept}; no combined submission was written"
        )


class ModelError(MnistOnnxError):
    """A model file or model bytes cannot be used as a digit classifier."""


class ProviderError(MnistOnnxError):
    """A requested execution provider is unknown or not available in this onnxruntime build."""


class ProviderFallbackWarning(RuntimeWarning):
    """A faster provider was asked for or chosen, but onnxruntime's CPU provider runs the model.

    CUDA requested but not registered (onnxruntime falls back silently), or ``auto`` without OpenVINO although
    its plugin is installed (it cannot be loaded), or with OpenVINO failing its label check.

    A warning, not an error: the predictions are right, only slower.  Turn it
    into an error with ``warnings.simplefilter("error", ProviderFallbackWarning)``.
    """


class CacheWarning(RuntimeWarning):
    """The cache of measured choices could not be read or written.

    A warning, not an error: nothing is wrong with the predictions; a choice
    that could not be kept is measured again next time (seconds).
    """


class DataError(MnistOnnxError):
    """Downloaded or in-memory data failed a check (hash, pickle contents, array shape)."""


class ImageError(MnistOnnxError):
    """An image cannot be used as a digit: unreadable, not an image, too large, or blank."""


class ContractWarning(UserWarning):
    """A model without mnist-onnx metadata looks fed in the wrong input convention (the message names the fix)."""


class InvertedDigitsWarning(UserWarning):
    """Most images look dark on light, while MNIST's digits are light on black (the message says how to invert)."""


class GateError(MnistOnnxError):
    """An export or quantization gate failed; nothing was written."""


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the pip command that fixes it."""

    def __init__(self, extra: str, missing: str):
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"this needs the '{extra}' extra ({missing} is not installed): pip install 'mnist-onnx[{extra}]'"
        )
