"""The ``mnist_onnx.*`` entries of an exported model's ONNX ``metadata_props``.

This is the contract between ``mnist-onnx export``/``quantize`` (which write
these entries) and the runtime (which reads them instead of hard-coding the
input layout, pixel scale or class labels).  It imports only the standard
library and the package's errors, so the runtime can use it without onnx or
TensorFlow.

Read a model's entries with
``parse_metadata(session.get_modelmeta().custom_metadata_map)``.

Keys the runtime acts on:

* ``mnist_onnx.input_layout``: ``NCHW`` (input N×1×28×28) or ``NHWC`` (N×28×28×1).
* ``mnist_onnx.pixel_scale``: the float the runtime multiplies uint8 pixels by
  (``repr(1 / 255)`` for the tutorial network).
* ``mnist_onnx.normalize``: ``[mean, std]`` (JSON) when the model wants
  ``(pixel * pixel_scale - mean) / std`` (PyTorch's ``Normalize``), e.g.
  ``[0.1307, 0.3081]``; absent when it does not.
* ``mnist_onnx.class_labels``: a JSON list, the label of each output column.
* ``mnist_onnx.output_kind``: ``probabilities`` (the output already sums to 1).
* ``mnist_onnx.precision``: ``fp32`` or ``int8``.

Informational keys (JSON objects, except the sha256): ``source_sha256``,
``training``, ``parity``, ``versions``, ``quantization``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..errors import ModelError
from ._types import PRECISIONS, Precision, check_precision

__all__ = [
    "PREFIX",
    "KEY_INPUT_LAYOUT",
    "KEY_PIXEL_SCALE",
    "KEY_NORMALIZE",
    "KEY_CLASS_LABELS",
    "KEY_OUTPUT_KIND",
    "KEY_PRECISION",
    "KEY_SOURCE_SHA256",
    "KEY_TRAINING",
    "KEY_PARITY",
    "KEY_VERSIONS",
    "KEY_QUANTIZATION",
    "LAYOUTS",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "ModelMetadata",
    "parse_metadata",
]

PREFIX = "mnist_onnx."
KEY_INPUT_LAYOUT = PREFIX + "input_layout"
KEY_PIXEL_SCALE = PREFIX + "pixel_scale"
KEY_NORMALIZE = PREFIX + "normalize"
KEY_CLASS_LABELS = PREFIX + "class_labels"
KEY_OUTPUT_KIND = PREFIX + "output_kind"
KEY_PRECISION = PREFIX + "precision"
KEY_SOURCE_SHA256 = PREFIX + "source_sha256"
KEY_TRAINING = PREFIX + "training"
KEY_PARITY = PREFIX + "parity"
KEY_VERSIONS = PREFIX + "versions"
KEY_QUANTIZATION = PREFIX + "quantization"

LAYOUTS = ("NCHW", "NHWC")
#: What a model's metadata may say its output holds.  The exporter writes
#: "probabilities"; "logits" is accepted for hand-made models.
DeclaredOutputKind = Literal["probabilities", "logits"]
OUTPUT_KINDS: tuple[DeclaredOutputKind, ...] = get_args(DeclaredOutputKind)

_JSON_OBJECT_KEYS = {
    "training": KEY_TRAINING,
    "parity": KEY_PARITY,
    "versions": KEY_VERSIONS,
    "quantization": KEY_QUANTIZATION,
}


@dataclass(frozen=True)
class ModelMetadata:
    """The ``mnist_onnx.*`` entries of a model; None where the model does not say.

    Attributes:
        input_layout: ``"NCHW"`` or ``"NHWC"``.
        pixel_scale: Factor from uint8 pixels to the model's input values.
        normalize: ``(mean, std)`` applied after ``pixel_scale``.
        class_labels: The label of each output column.
        output_kind: ``"probabilities"`` or ``"logits"``.
        precision: ``"fp32"`` or ``"int8"``.
        source_sha256: sha256 of the Keras file the model was exported from.
        training, parity, versions, quantization: The informational JSON objects.
        other: Every other ``mnist_onnx.*`` entry, unparsed.
    """

    input_layout: str | None = None
    pixel_scale: float | None = None
    normalize: tuple[float, float] | None = None
    class_labels: tuple[Any, ...] | None = None
    output_kind: DeclaredOutputKind | None = None
    precision: Precision | None = None
    source_sha256: str | None = None
    training: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    other: dict[str, str] = field(default_factory=dict)
    #: Whether the model has any ``mnist_onnx.*`` entry (an mnist-onnx export).
    any_entries: bool = False


def _choice(meta: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str | None:
    value = meta.get(key)
    if value is not None and value not in allowed:
        raise ModelError(f"metadata {key}: expected {' or '.join(allowed)}, got {value[:80]!r}")
    return value


def parse_metadata(meta: Mapping[str, str]) -> ModelMetadata:
    """Parse the ``mnist_onnx.*`` entries of a model's custom metadata.

    Args:
        meta: ``session.get_modelmeta().custom_metadata_map`` (or any mapping of
            strings); entries without the ``mnist_onnx.`` prefix are ignored.

    Returns:
        A :class:`ModelMetadata`; absent keys are None.

    Raises:
        ModelError: If a present entry is malformed (the message names the key).

    >>> m = parse_metadata({"mnist_onnx.input_layout": "NCHW", "mnist_onnx.pixel_scale": "0.5",
    ...                     "mnist_onnx.class_labels": '["0", "1"]', "author": "ignored"})
    >>> m.input_layout, m.pixel_scale, m.class_labels, m.precision
    ('NCHW', 0.5, ('0', '1'), None)
    """
    layout = _choice(meta, KEY_INPUT_LAYOUT, LAYOUTS)
    output_kind: DeclaredOutputKind | None = None
    if _choice(meta, KEY_OUTPUT_KIND, OUTPUT_KINDS) is not None:
        output_kind = "logits" if meta[KEY_OUTPUT_KIND] == "logits" else "probabilities"
    precision = check_precision(_choice(meta, KEY_PRECISION, PRECISIONS))

    pixel_scale = None
    scale_text = meta.get(KEY_PIXEL_SCALE)
    if scale_text is not None:
        try:
            pixel_scale = float(scale_text)
        except ValueError:
            pixel_scale = math.nan
        if not (math.isfinite(pixel_scale) and pixel_scale > 0):
            raise ModelError(f"metadata {KEY_PIXEL_SCALE}: expected a positive number, got {scale_text[:80]!r}")

    normalize = parse_normalize(meta.get(KEY_NORMALIZE), what=f"metadata {KEY_NORMALIZE}")

    class_labels = None
    labels_text = meta.get(KEY_CLASS_LABELS)
    if labels_text is not None:
        try:
            labels = json.loads(labels_text)
        except ValueError:
            labels = None
        if not isinstance(labels, list) or not labels or len({json.dumps(x) for x in labels}) != len(labels):
            raise ModelError(
                f"metadata {KEY_CLASS_LABELS}: expected a JSON list of distinct labels, got {labels_text[:80]!r}"
            )
        class_labels = tuple(labels)

    objects: dict[str, dict[str, Any] | None] = {}
    for attr, key in _JSON_OBJECT_KEYS.items():
        text = meta.get(key)
        value = None
        if text is not None:
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise ModelError(f"metadata {key}: expected a JSON object, got {text[:80]!r}")
        objects[attr] = value

    known = {
        KEY_INPUT_LAYOUT,
        KEY_PIXEL_SCALE,
        KEY_NORMALIZE,
        KEY_CLASS_LABELS,
        KEY_OUTPUT_KIND,
        KEY_PRECISION,
        KEY_SOURCE_SHA256,
        *_JSON_OBJECT_KEYS.values(),
    }
    other = {k: v for k, v in meta.items() if k.startswith(PREFIX) and k not in known}
    return ModelMetadata(
        input_layout=layout,
        pixel_scale=pixel_scale,
        normalize=normalize,
        class_labels=class_labels,
        output_kind=output_kind,
        precision=precision,
        source_sha256=meta.get(KEY_SOURCE_SHA256),
        other=other,
        any_entries=any(k.startswith(PREFIX) for k in meta),
        **objects,
    )


def parse_normalize(text: str | None, *, what: str = "normalize") -> tuple[float, float] | None:
    """Parse ``MEAN,STD`` (or the JSON ``[MEAN, STD]``) into two floats, STD positive.

    >>> parse_normalize("0.1307,0.3081")
    (0.1307, 0.3081)
    >>> parse_normalize("[0.5, 0.5]")
    (0.5, 0.5)

    Raises:
        ModelError: If the text is not two finite numbers with a positive second one.
    """
    if text is None:
        return None
    parts = text.strip().strip("[]").split(",")
    try:
        mean, std = (float(part) for part in parts)
    except ValueError:
        raise ModelError(f"{what}: expected MEAN,STD (two numbers, e.g. 0.1307,0.3081), got {text[:80]!r}") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ModelError(f"{what}: expected a finite MEAN and a positive STD, got {text[:80]!r}")
    return mean, std
