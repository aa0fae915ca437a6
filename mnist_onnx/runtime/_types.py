"""The runtime's shared vocabulary: the types every signature uses, and their checks.

Standard library only, so the CLI can import it without onnxruntime or numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypeAlias, get_args

from ..errors import MnistOnnxError

__all__ = [
    "PathLike",
    "SerializableModel",
    "ModelInput",
    "Precision",
    "PRECISIONS",
    "ProviderSpec",
    "Providers",
    "check_precision",
    "check_batch_size",
]

#: A file system path.
PathLike: TypeAlias = str | os.PathLike[str]


class SerializableModel(Protocol):
    """Anything with ``SerializeToString()``, such as an ``onnx.ModelProto`` (onnx itself is not imported)."""

    def SerializeToString(self) -> bytes: ...  # noqa: N802 - protobuf's own name


#: A model as callers hand it over: None for the bundled model, a path to an
#: ``.onnx`` file, the serialized bytes, or an ``onnx.ModelProto``.
ModelInput: TypeAlias = PathLike | bytes | bytearray | memoryview | SerializableModel | None

#: The two model precisions the package builds and bundles.
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

#: One execution provider: an onnxruntime name, or ``(name, options)``.
ProviderSpec: TypeAlias = str | tuple[str, dict[str, Any]]
#: ``"auto"``, ``"cpu"``, ``"cuda"``, or onnxruntime provider names (optionally
#: ``(name, options)`` pairs) in order of preference.
Providers: TypeAlias = str | Sequence[ProviderSpec]


def check_precision(precision: object) -> Precision | None:
    """Return ``precision`` if it is None, ``"fp32"`` or ``"int8"``.

    Raises:
        MnistOnnxError: For any other value.

    >>> check_precision("int8")
    'int8'
    """
    if precision is None:
        return None
    if precision == "fp32":
        return "fp32"
    if precision == "int8":
        return "int8"
    raise MnistOnnxError(f"expected precision 'fp32' or 'int8', got {precision!r}")


def check_batch_size(batch_size: object) -> int:
    """Return ``batch_size`` as an int if it is a positive integer (numpy integers included).

    Raises:
        MnistOnnxError: For zero, negative numbers, booleans and non-integers.

    >>> check_batch_size(16)
    16
    """
    index = getattr(batch_size, "__index__", None)
    if index is None or isinstance(batch_size, bool) or index() < 1:
        raise MnistOnnxError(f"expected batch_size to be a positive integer, got {batch_size!r}")
    return int(index())
