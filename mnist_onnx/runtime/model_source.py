"""Where a model comes from: a path, bytes, an ``onnx.ModelProto``, or the bundled models.

Also the one place that knows where the bundled files live (the models, their
card and the sample CSV), checks a bundled model against the sha256 on its
card, and says why a file that onnxruntime rejects is not an ONNX model.
Standard library only (no onnxruntime), so the CLI can name the bundled sample
without loading the runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ModelError
from ._types import ModelInput, Precision, check_precision

__all__ = ["ModelSource", "load_model", "bundled_dir", "bundled_sample_path", "describe_bad_model"]

#: The bundled model card: for each precision, the model file and its sha256.
BUNDLED_CARD = "model_card.json"
#: 1,000 held-out real MNIST digits with their labels, in train.csv format.
BUNDLED_SAMPLE = "sample.csv.gz"


@dataclass(frozen=True)
class ModelSource:
    """The bytes of a model and where they came from.

    Attributes:
        data: The serialized ONNX model.
        name: A human-readable origin for messages (a path, ``<bytes>``, or
            ``bundled fp32 model digit_cnn.onnx``).
        bundled_precision: ``"fp32"``/``"int8"`` for a bundled model, else None.
    """

    data: bytes
    name: str
    bundled_precision: Precision | None = None


def bundled_dir() -> Path:
    """The folder of the bundled models, their card and the sample CSV."""
    return Path(str(resources.files("mnist_onnx.runtime").joinpath("bundled")))


def bundled_sample_path() -> Path:
    """The bundled sample: 1,000 labelled held-out digits (train.csv format, gzipped)."""
    return bundled_dir() / BUNDLED_SAMPLE


def _bundled_model(precision: Precision) -> ModelSource:
    folder = bundled_dir()
    card_path = folder / BUNDLED_CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"this installation has no bundled model ({card_path} is missing); "
            f"pass a model file instead (model=PATH, or --model PATH)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_path}: cannot read the bundled model card ({exc})") from None
    files = card.get("files") if isinstance(card, dict) else None
    entry = files.get(precision) if isinstance(files, dict) else None
    if entry is None:
        raise ModelError(
            f"{card_path}: the model card has no files.{precision} entry: this installation ships no {precision} model"
        )
    if not isinstance(entry, dict) or not {"path", "sha256"} <= entry.keys():
        raise ModelError(f"{card_path}: expected files.{precision}.path and .sha256, got {json.dumps(entry)[:200]}")
    path = folder / entry["path"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"bundled {precision} model {path}: cannot read ({exc.strerror or exc}); "
            f"reinstall mnist-onnx or pass model=PATH"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ModelError(
            f"bundled {precision} model {path}: expected sha256 {entry['sha256']} (model card), "
            f"got {digest}; the installation is damaged, reinstall mnist-onnx"
        )
    return ModelSource(data, f"bundled {precision} model {entry['path']}", precision)


def _read_model_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except IsADirectoryError:
        hint = " (a SavedModel folder? export it to ONNX first)" if (path / "saved_model.pb").exists() else ""
        raise ModelError(f"{path}: is a directory, expected an .onnx file{hint}") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.strerror or exc})") from None


def load_model(model: ModelInput | ModelSource = None, *, precision: Precision | None = None) -> ModelSource:
    """Read a model from a path, bytes, an ``onnx.ModelProto``, or the bundled default.

    Args:
        model: None for the bundled model of ``precision``; a path to a
            ``.onnx`` file; the serialized bytes; or any object with
            ``SerializeToString()`` (an ``onnx.ModelProto``; onnx itself is not
            imported here).  A :class:`ModelSource` is returned as it is.
        precision: Which bundled model, ``"fp32"`` (None) or ``"int8"``, when ``model`` is None.

    Returns:
        A :class:`ModelSource`. A bundled model's sha256 has been checked
        against the model card.

    Raises:
        ModelError: If the file is missing, unreadable or empty, or a bundled
            model is missing or does not match its recorded sha256.
        MnistOnnxError: If ``precision`` is not ``"fp32"``, ``"int8"`` or None.
    """
    if isinstance(model, ModelSource):
        return model
    if model is None:
        return _bundled_model(check_precision(precision) or "fp32")
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, name = bytes(model), f"<{len(model):,} bytes>"
    elif isinstance(model, (str, os.PathLike)):
        name = str(model)
        data = _read_model_file(Path(model))
    elif hasattr(model, "SerializeToString"):
        data, name = model.SerializeToString(), f"<{type(model).__name__}>"
    else:
        raise ModelError(f"expected a model path, bytes or None (the bundled model), got {type(model).__name__}")
    if not data:
        raise ModelError(f"{name}: is empty (0 bytes), expected an ONNX model")
    return ModelSource(data, name)


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    """Read a protobuf varint at ``pos``: (its value or None if it does not end, the position after it)."""
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            return None, pos
    return None, pos


def _skip_field(data: bytes, start: int) -> tuple[str | None, int]:
    """Step over the top-level field at ``start``: (what is wrong with it or None, the position after it)."""
    tag, pos = _varint(data, start)
    if tag is None:
        return f"ends inside a field header at byte {start:,}", pos
    field, wire = tag >> 3, tag & 7
    if field == 0 or wire in (3, 4, 6, 7):
        return f"not protobuf data (invalid field tag at byte {start:,})", pos
    if wire == 0:
        value, pos = _varint(data, pos)
        if value is None:
            return f"ends inside a value at byte {start:,}", pos
    elif wire in (1, 5):
        pos += 8 if wire == 1 else 4
    else:  # wire == 2, length-delimited
        length, pos = _varint(data, pos)
        if length is None:
            return f"ends inside a length at byte {start:,}", pos
        pos += length
    if pos > len(data):
        return f"field {field} at byte {start:,} runs {pos - len(data):,} bytes past the end of the data", pos
    return None, pos


def _protobuf_problem(data: bytes) -> str | None:
    """Say why ``data`` cannot be a protobuf message, or None if its top level parses.

    Only the top level is walked (tag, wire type, length), which is enough to
    tell a truncated ONNX file (a length that runs past the end) from a file
    that is not protobuf at all, without importing onnx.

    >>> _protobuf_problem(bytes([0x0A, 0x05, 0x61]))
    'field 1 at byte 0 runs 4 bytes past the end of the data'
    """
    pos = 0
    while pos < len(data):
        problem, pos = _skip_field(data, pos)
        if problem:
            return problem
    return None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def not_onnx_reason(name: str, data: bytes) -> str | None:
    """Why ``data`` cannot be an ONNX model (a zip, HDF5 or text file, truncated, not protobuf), or None.

    Cheap (no onnxruntime): the server checks a ``--model`` file with it before it starts.
    """
    if data[:4] == b"PK\x03\x04":
        return (
            f"{name}: is a zip archive (a .keras model?), expected an ONNX model; convert it with 'mnist-onnx export'"
        )
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return f"{name}: is an HDF5 file (a Keras .h5 model?), expected an ONNX model"
    head = data[:256]
    if not head:
        return f"{name}: is empty (0 bytes), expected an ONNX model"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        first = head.splitlines()[0][:60]
        return f"{name}: is a text file, expected a binary ONNX model (first line: {first!r})"
    problem = _protobuf_problem(data)
    if problem and ("past the end" in problem or problem.startswith("ends inside")):
        return f"{name}: truncated ONNX model ({len(data):,} bytes; {problem}); copy or export it again"
    if problem:
        return f"{name}: is not an ONNX model ({problem})"
    return None


def describe_bad_model(source: ModelSource, error: Exception) -> str:
    """Say why onnxruntime rejected ``source``: a zip, HDF5 or text file, a truncated or non-ONNX file."""
    reason = not_onnx_reason(source.name, source.data)
    if reason is not None:
        return reason
    return f"{source.name}: onnxruntime cannot load this model: {first_line(error)}"
