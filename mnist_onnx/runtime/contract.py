"""The model contract: what a model takes and gives, and how images and labels are fitted to it.

How the model wants its input comes from the model itself: the
``mnist_onnx.*`` entries of its ONNX ``metadata_props`` when present (see
:mod:`.metadata`), otherwise its input shape (N×28×28×1 is NHWC, N×1×28×28 is
NCHW), a pixel scale of 1/255 and the digits 0-9 as class labels.  Whether
the single output holds probabilities or logits comes from the metadata, or
else from a probe run on two images (:func:`probed`); logits go through a
softmax, so callers always get probabilities.

This module is pure: it reads a session's signature and metadata, checks
arrays and converts them, and never runs a model.  Besides the exporter's
models it takes what users bring: flat N×784 and N×28×28 inputs (the same
memory order as one-channel images), float16 inputs (cast), several outputs
(the only N×classes one, or the one named), and a pixel scale and
normalisation given by the caller (``pixel_scale=``, ``normalize=``) or by the
``mnist_onnx.pixel_scale`` / ``mnist_onnx.normalize`` metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

from ..errors import MnistOnnxError, ModelError
from ._types import Precision
from .metadata import KEY_NORMALIZE, KEY_PIXEL_SCALE, KEY_PRECISION, ModelMetadata, parse_metadata
from .model_source import ModelSource

__all__ = [
    "OutputKind",
    "Layout",
    "ModelContract",
    "read_contract",
    "probe_images",
    "probed",
    "validated_images",
    "single_image",
    "ModelInputConverter",
    "label_values",
    "softmax",
]

#: What the model's output holds.  ``"unknown"`` only until the probe run
#: decides (a model without ``mnist_onnx.output_kind`` metadata); a
#: :class:`~.predictor.DigitClassifier`'s contract is never ``"unknown"``.
OutputKind = Literal["probabilities", "logits", "unknown"]
#: The image input's memory layout: N×28×28×1 or N×1×28×28.
Layout = Literal["NHWC", "NCHW"]

_IMAGE_SHAPES = "(N, 28, 28), (N, 28, 28, 1), (N, 1, 28, 28) or (N, 784)"
_SINGLE_SHAPES = ((28, 28), (28, 28, 1), (784,))
_INPUT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}
_SPATIAL: dict[Layout, tuple[int, int, int]] = {"NHWC": (28, 28, 1), "NCHW": (1, 28, 28)}
_DEFAULT_PIXEL_SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class ModelContract:
    """What a model expects and produces, read from its metadata and its signature.

    Attributes:
        input_name: The model's (only) input.
        output_name: The model's (only) output.
        layout: ``"NHWC"`` (N×28×28×1) or ``"NCHW"`` (N×1×28×28).
        pixel_scale: Factor from uint8 pixels to the model's input values (float input).
        class_labels: The label of each output column; integers when the model's
            labels are all integers or digit strings (the exporter writes "0".."9").
        output_kind: ``"probabilities"``, ``"logits"``, or ``"unknown"`` until probed.
        precision: ``"fp32"``, ``"int8"``, or None when the model does not say.
        fixed_batch: The model's static batch size, or None when it is dynamic.
        uint8_input: The model takes raw uint8 pixels 0-255 (and scales them itself).
        normalize: ``(mean, std)``: the input is ``(pixel * pixel_scale - mean) / std``.
        input_rank: 4 for images (N×28×28×1 / N×1×28×28), 3 for N×28×28, 2 for N×784.
        input_type: ``"float32"``, ``"float16"`` (pixels are cast) or ``"uint8"``.
        sources: Where each part came from, e.g. ``("pixel_scale", "flag")``; the
            values are ``"metadata"``, ``"signature"``, ``"flag"`` or ``"default"``.
        has_metadata: Whether the model carries any ``mnist_onnx.*`` entry.
    """

    input_name: str
    output_name: str
    layout: Layout
    pixel_scale: float
    class_labels: tuple[Any, ...]
    output_kind: OutputKind
    precision: Precision | None
    fixed_batch: int | None = None
    uint8_input: bool = False
    normalize: tuple[float, float] | None = None
    input_rank: int = 4
    input_type: str = "float32"
    sources: tuple[tuple[str, str], ...] = ()
    has_metadata: bool = False


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _shown(shape: list[Any]) -> str:
    return "×".join(str(d) if _static(d) else "N" for d in shape) or "a scalar"


def _flat_rank(shape: list[Any]) -> int | None:
    """2 for an N×784 input, 3 for N×28×28 (MLPs: the same memory order as one-channel images)."""
    spatial = [_static(d) for d in shape[1:]]
    if spatial == [784]:
        return 2
    if spatial == [28, 28]:
        return 3
    return None


def _layout(name: str, shape: list[Any], declared: str | None) -> Layout:
    """The input layout: from the metadata when it says (checked against the shape), else from the shape."""
    if len(shape) != 4:
        raise ModelError(f"{name}: expected input shape N×28×28×1, N×1×28×28, N×28×28 or N×784, got {_shown(shape)}")
    spatial = tuple(_static(d) for d in shape[1:])
    for layout, wanted in _SPATIAL.items():
        if declared == layout:
            if not all(d in (None, want) for d, want in zip(spatial, wanted, strict=True)):
                raise ModelError(f"{name}: metadata says {layout} but the input shape is {_shown(shape)}")
            return layout
    for layout, wanted in _SPATIAL.items():
        if declared is None and spatial == wanted:
            return layout
    raise ModelError(f"{name}: expected input shape N×28×28×1, N×1×28×28, N×28×28 or N×784, got {_shown(shape)}")


def _class_labels(name: str, meta: ModelMetadata, output: Any) -> tuple[Any, ...]:
    out_shape = list(output.shape or [])
    if len(out_shape) != 2:
        raise ModelError(f"{name}: expected output shape N×classes, got {_shown(out_shape)} for output {output.name!r}")
    labels = meta.class_labels if meta.class_labels is not None else tuple(range(10))
    if all(isinstance(label, int) or isinstance(label, str) and label.isdigit() for label in labels):
        # The exporter writes the digits as JSON strings ("0".."9"); a Kaggle Label is an integer.
        labels = tuple(int(label) for label in labels)
    classes = _static(out_shape[1])
    if classes is not None and classes != len(labels):
        raise ModelError(
            f"{name}: expected {len(labels)} output classes "
            f"({'digits 0-9' if meta.class_labels is None else 'from its class labels'}), "
            f"got {classes} in output {output.name!r}"
        )
    return labels


def _scores_output(name: str, outputs: list[Any], wanted: str | None, classes: int) -> tuple[Any, str]:
    """The output holding class scores, and where the choice came from."""
    names = ", ".join(o.name for o in outputs)
    if wanted is not None:
        for output in outputs:
            if output.name == wanted:
                shape = list(output.shape or [])
                if len(shape) != 2 or _static(shape[1]) not in (None, classes):
                    raise ModelError(
                        f"{name}: output {wanted!r} is shaped {_shown(shape)}, expected N×{classes} class scores"
                    )
                return output, "flag"
        raise ModelError(f"{name}: no output {wanted!r}; the model's outputs are {names}")
    if len(outputs) == 1:
        return outputs[0], "signature"
    scores = [o for o in outputs if len(o.shape or []) == 2 and _static(o.shape[1]) == classes]
    if len(scores) == 1:
        return scores[0], f"signature (the only N×{classes} output)"
    described = ", ".join(f"{o.name} ({_shown(list(o.shape or []))})" for o in outputs)
    raise ModelError(
        f"{name}: expected one N×{classes} output of class scores, got {len(outputs)} outputs: "
        f"{described}; name the one to use (--output NAME, or output= in Python)"
    )


def _signature(session: ort.InferenceSession, name: str, output: str | None, classes: int) -> tuple[Any, Any, str]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelError(
            f"{name}: expected a model with 1 input (images), got {len(inputs)}: {', '.join(i.name for i in inputs)}"
        )
    node = inputs[0]
    if node.type not in _INPUT_TYPES:
        raise ModelError(
            f"{name}: expected a float32, float16 or uint8 image input, got {node.type} for input {node.name!r}"
        )
    chosen, origin = _scores_output(name, outputs, output, classes)
    return node, chosen, origin


def _input_convention(
    name: str, meta: ModelMetadata, uint8_input: bool, pixel_scale: float | None, normalize: tuple[float, float] | None
) -> tuple[float, tuple[float, float] | None, list[tuple[str, str]]]:
    """Pixel scale and normalisation: the caller's, else the metadata's, else 1/255 and none."""
    if uint8_input and (pixel_scale is not None or normalize is not None):
        raise ModelError(
            f"{name}: the model takes uint8 pixels 0-255 and scales them itself; "
            f"--pixel-scale and --normalize do not apply"
        )
    if pixel_scale is not None and not (np.isfinite(pixel_scale) and pixel_scale > 0):
        raise ModelError(f"expected pixel_scale to be a positive number, got {pixel_scale!r}")
    if normalize is not None and not (len(normalize) == 2 and all(np.isfinite(normalize)) and normalize[1] > 0):
        raise ModelError(f"expected normalize to be (mean, std) with a positive std, got {normalize!r}")
    sources = []
    if pixel_scale is not None:
        scale, origin = float(pixel_scale), "flag"
    elif meta.pixel_scale is not None:
        scale, origin = meta.pixel_scale, f"metadata ({KEY_PIXEL_SCALE})"
    else:
        scale, origin = _DEFAULT_PIXEL_SCALE, "default"
    sources.append(("pixel_scale", "uint8 input: the model scales itself" if uint8_input else origin))
    if normalize is not None:
        norm: tuple[float, float] | None = (float(normalize[0]), float(normalize[1]))
        sources.append(("normalize", "flag"))
    elif meta.normalize is not None:
        norm = meta.normalize
        sources.append(("normalize", f"metadata ({KEY_NORMALIZE})"))
    else:
        norm = None
        sources.append(("normalize", "default"))
    return scale, norm, sources


def read_contract(
    session: ort.InferenceSession,
    source: ModelSource,
    *,
    precision: Precision | None = None,
    pixel_scale: float | None = None,
    normalize: tuple[float, float] | None = None,
    output: str | None = None,
) -> ModelContract:
    """Read a model's contract from its signature and its ``mnist_onnx.*`` metadata.

    Args:
        session: The model's session.
        source: Where the model came from (named in errors; a bundled model's
            precision fills in when its metadata has none).
        precision: The precision the caller asked for; checked against the
            model's metadata when the model is not a bundled one.
        pixel_scale: Overrides the metadata's (default 1/255): float input = pixel × scale.
        normalize: ``(mean, std)``, overrides the metadata's: input = (pixel × scale - mean) / std.
        output: The output to read class scores from (default: the only one, or the only N×classes one).

    Returns:
        The contract; its ``output_kind`` is ``"unknown"`` when the metadata does not say.

    Raises:
        ModelError: If the model has other than one image input and one N×classes
            output, an input shape other than N×28×28×1 / N×1×28×28, malformed
            metadata, or a precision other than the one asked for.
    """
    name = source.name
    try:
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    except ModelError as exc:
        raise ModelError(f"{name}: {exc}") from None
    classes = len(meta.class_labels) if meta.class_labels is not None else 10
    node, out, output_origin = _signature(session, name, output, classes)
    shape = list(node.shape or [])
    rank = _flat_rank(shape) if len(shape) in (2, 3) else None
    # With one channel, N×784, N×28×28 and N×1×28×28 hold the pixels in the same order.
    layout = "NCHW" if rank is not None else _layout(name, shape, meta.input_layout)
    class_labels = _class_labels(name, meta, out)
    uint8_input = node.type == "tensor(uint8)"
    scale, norm, sources = _input_convention(name, meta, uint8_input, pixel_scale, normalize)
    layout_origin = f"metadata ({meta.input_layout})" if meta.input_layout and rank is None else "signature"
    sources = [
        (
            "input",
            f"{node.name!r} {_shown(shape)} {_INPUT_TYPES[node.type]}, {layout_origin}"
            + (", cast from float32" if node.type == "tensor(float16)" else ""),
        ),
        ("output", f"{out.name!r} {_shown(list(out.shape or []))}, {output_origin}"),
        *sources,
    ]
    model_precision = meta.precision
    if source.bundled_precision is None and precision is not None and model_precision not in (None, precision):
        raise ModelError(
            f"{name}: expected precision {precision}, got {model_precision} (the model's {KEY_PRECISION} metadata)"
        )
    return ModelContract(
        input_name=node.name,
        output_name=out.name,
        layout=layout,
        pixel_scale=scale,
        class_labels=class_labels,
        output_kind=meta.output_kind or "unknown",
        precision=model_precision or source.bundled_precision,
        fixed_batch=_static(shape[0]) if shape else None,
        uint8_input=uint8_input,
        normalize=norm,
        input_rank=rank or 4,
        input_type=_INPUT_TYPES[node.type],
        sources=tuple(sources),
        has_metadata=meta.any_entries or source.bundled_precision is not None,
    )


def probe_images() -> np.ndarray:
    """Two images, all black and all white: uint8 (2, 28, 28, 1)."""
    probe = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    probe[1] = 255
    return probe


def probed(contract: ModelContract, scores: np.ndarray, model_name: str) -> ModelContract:
    """Check the model's output on :func:`probe_images`; return the contract with its output kind known.

    Args:
        contract: The contract from :func:`read_contract`.
        scores: The model's raw output for the two probe images.
        model_name: Named in errors.

    Returns:
        A new contract (the given one is frozen); ``output_kind`` is
        ``"probabilities"`` when every row is non-negative and sums to 1, else
        ``"logits"``, unless the metadata already said.

    Raises:
        ModelError: If the output is not float scores shaped (2, classes).
    """
    classes = len(contract.class_labels)
    if scores.ndim != 2 or scores.shape != (2, classes):
        raise ModelError(f"{model_name}: expected output shape (2, {classes}) for 2 images, got {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise ModelError(f"{model_name}: expected float class scores, got {scores.dtype}")
    if contract.output_kind != "unknown":
        return contract
    as_float = scores.astype(np.float32)
    looks_like_probabilities = bool(
        np.all(np.isfinite(as_float)) and as_float.min() >= 0 and np.allclose(as_float.sum(axis=1), 1.0, atol=1e-3)
    )
    return replace(contract, output_kind="probabilities" if looks_like_probabilities else "logits")


def _check_dtype(array: np.ndarray) -> np.ndarray:
    """uint8 and float arrays as they are; other integers (int64 from pandas, nested lists) checked 0-255."""
    if array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating):
        return array
    if np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise MnistOnnxError(f"expected integer pixels 0-255, got values from {array.min()} to {array.max()}")
        return array.astype(np.uint8)
    raise MnistOnnxError(
        f"expected uint8 pixels 0-255, integers 0-255 or float pixels in [0, 1], got dtype {array.dtype}"
    )


def _check_shape(shape: tuple[int, ...]) -> None:
    if shape in _SINGLE_SHAPES:
        raise MnistOnnxError(
            f"expected a batch of images shaped {_IMAGE_SHAPES}, got one image shaped {shape}; "
            f"pass images[None] for a batch of one"
        )
    if not (
        len(shape) == 3
        and shape[1:] == (28, 28)
        or len(shape) == 4
        and shape[1:] in ((28, 28, 1), (1, 28, 28))
        or len(shape) == 2
        and shape[1] == 784
    ):
        hint = (
            ": rows of 785 values look like train.csv rows with the label first; drop the label column"
            if shape[-1:] == (785,)
            else ""
        )
        raise MnistOnnxError(f"expected images shaped {_IMAGE_SHAPES}, got {shape}{hint}")
    if shape[0] == 0:
        raise MnistOnnxError(f"expected at least one image, got an empty array shaped {shape}")


def _check_float_range(array: np.ndarray) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.argmin(finite.reshape(len(array), -1).all(axis=1)))
        value = array[bad][~finite[bad]].flat[0]
        raise MnistOnnxError(f"expected finite pixel values, got {value} in image {bad}")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        hint = " (divide by 255, or pass uint8 pixels)" if high > 1 else ""
        raise MnistOnnxError(f"expected float pixels in [0, 1], got values from {low:g} to {high:g}{hint}")


def validated_images(images: npt.ArrayLike | pd.DataFrame | pd.Series) -> np.ndarray:
    """Check an in-memory image array and return it as (N, 28, 28, 1), uint8 or float.

    Args:
        images: uint8 pixels 0-255, other integers 0-255 (checked; int64 from
            ``pd.read_csv(...).values``, nested lists), or float pixels in [0, 1],
            shaped (N, 28, 28), (N, 28, 28, 1), (N, 1, 28, 28) (PyTorch) or
            (N, 784); a DataFrame of 784 pixel columns works too.

    Raises:
        MnistOnnxError: If the array is empty, one image rather than a batch, or
            has the wrong dtype, shape or value range, or contains NaN.
    """
    if isinstance(images, (pd.DataFrame, pd.Series)):
        images = images.to_numpy()
    array = _check_dtype(np.asarray(images))
    _check_shape(array.shape)
    array = array.reshape(len(array), 28, 28, 1)
    if array.dtype != np.uint8:
        _check_float_range(array)
    return array


def single_image(images: Any) -> bool:
    """Whether ``images`` is one image, (28, 28), (28, 28, 1) or (784,), rather than a batch."""
    if isinstance(images, (pd.DataFrame, pd.Series)):
        return False
    shape = np.shape(images)
    return tuple(shape) in _SINGLE_SHAPES


class ModelInputConverter:
    """Turns checked pixels into the model's input, as its contract says.

    Args:
        contract: The model's contract.
    """

    def __init__(self, contract: ModelContract) -> None:
        self.contract = contract
        # uint8 pixel -> model input, computed once in float64 and rounded, so
        # pixel_scale=1/255 gives exactly float32(p) / float32(255) as in training.
        values = np.arange(256, dtype=np.float64) * contract.pixel_scale
        if contract.normalize is not None:
            values = (values - contract.normalize[0]) / contract.normalize[1]
        self._lut = values.astype(np.float32)
        if contract.input_rank == 2:
            self.input_shape: tuple[int, ...] = (784,)
        elif contract.input_rank == 3:
            self.input_shape = (28, 28)
        else:
            self.input_shape = (1, 28, 28) if contract.layout == "NCHW" else (28, 28, 1)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, 28, 28, 1) or float in [0, 1] -> the model's input (float32, or uint8 pixels)."""
        contract = self.contract
        if contract.uint8_input:
            # Floats in [0, 1] go to the nearest of the 256 pixel values, as a
            # quantized model's input QuantizeLinear (scale 1/255) would round them.
            x = (
                pixels
                if pixels.dtype == np.uint8
                else np.rint(np.asarray(pixels, np.float32) * np.float32(255.0)).astype(np.uint8)
            )
        elif pixels.dtype == np.uint8:
            x = np.take(self._lut, pixels)
        else:
            x = np.asarray(pixels, dtype=np.float32)
            if contract.pixel_scale != _DEFAULT_PIXEL_SCALE:
                x = x * np.float32(255.0 * contract.pixel_scale)
            if contract.normalize is not None:
                x = (x - np.float32(contract.normalize[0])) / np.float32(contract.normalize[1])
        if contract.input_type == "float16":
            x = x.astype(np.float16)
        # With one channel, NHWC (n, 28, 28, 1), NCHW (n, 1, 28, 28), (n, 28, 28) and (n, 784)
        # have the same memory order.
        return x.reshape((len(x), *self.input_shape))


def label_values(class_labels: tuple[Any, ...], indices: np.ndarray) -> np.ndarray:
    """The class label of each output-column index: int64 for integer labels, else object.

    >>> label_values((0, 1, 2), np.array([2, 0])).tolist()
    [2, 0]
    >>> label_values(("cat", "dog"), np.array([1])).tolist()
    ['dog']
    """
    if class_labels == tuple(range(len(class_labels))):
        return indices.astype(np.int64)
    if all(isinstance(label, int) for label in class_labels):
        return np.asarray(class_labels, dtype=np.int64)[indices]
    return np.asarray(class_labels, dtype=object)[indices]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) scores, in place on a copy, float dtype kept.

    >>> softmax(np.array([[0.0, 0.0]], dtype=np.float32)).tolist()
    [[0.5, 0.5]]
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted
