"""The parity gate: an exported ONNX model must compute what the Keras model computes.

Checked before an export is kept (:func:`check_parity`):

1. ``onnx.checker.check_model(full_check=True)`` (structure and shape inference).
2. onnxruntime against Keras on real digits (at least
   :data:`MIN_VALIDATION_ROWS`) plus edge inputs (all-black, all-white, mid-grey,
   uniform noise), at two batch sizes (batch 1, and a large batch whose last
   chunk is ragged), so a batch dimension that is not really dynamic, or a
   result that depends on the batch, fails.  Every probability within
   :data:`DEFAULT_ATOL` of Keras', and the same predicted digit on every image.
3. ``onnx.reference.ReferenceEvaluator`` (onnx's own numpy implementation of
   the operators, which nobody on this project wrote) against Keras on a small
   batch, with the same tolerances.

On failure :class:`~mnist_onnx.errors.GateError` says by how much and on which
images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from .._fileio import sha256_file
from ..errors import GateError, MnistOnnxError
from ..runtime.kaggle_csv import iter_kaggle_csv

__all__ = [
    "BUNDLED_SAMPLE",
    "DEFAULT_ATOL",
    "DEFAULT_BATCH_SIZES",
    "MIN_VALIDATION_ROWS",
    "DEFAULT_VALIDATION_ROWS",
    "ParityImages",
    "load_parity_images",
    "edge_images",
    "describe_path",
    "to_model_input",
    "run_onnxruntime",
    "check_parity",
]

#: 1,000 real held-out digits with labels, shipped inside the package.
BUNDLED_SAMPLE = Path(__file__).resolve().parents[1] / "runtime" / "bundled" / "sample.csv.gz"
#: Largest allowed |Keras - ONNX| of any probability.  float32 softmax outputs
#: are at most 1; the same float32 network differs between two kernels by
#: rounding only (measured: about 1e-7 on the bundled model).
DEFAULT_ATOL = 1e-5
#: Batch 1 and a batch that leaves a ragged last chunk on 1,000+ images.
DEFAULT_BATCH_SIZES = (1, 384)
MIN_VALIDATION_ROWS = 1000
DEFAULT_VALIDATION_ROWS = 2000
_REFERENCE_IMAGES = 8


@dataclass(frozen=True)
class ParityImages:
    """The images a gate runs: real digits first, then edge inputs.

    Attributes:
        images: uint8 (N, 28, 28, 1).
        names: One human-readable name per image, for error messages.
        labels: The real digits' labels (None if the CSV has none); edge inputs have none.
        real_rows: How many of ``images`` are real digits.
        source: Where the real digits came from.
        source_sha256: sha256 of that file.
    """

    images: np.ndarray
    names: list[str]
    labels: np.ndarray | None
    real_rows: int
    source: str
    source_sha256: str


def describe_path(path: Path) -> str:
    """How reports name a data file: the bundled sample by its place in the package, others by file name.

    The sha256 recorded beside the name identifies the content; a full path would only name the folders of the
    machine that built the report.

    >>> describe_path(BUNDLED_SAMPLE)
    'mnist_onnx/runtime/bundled/sample.csv.gz (bundled)'
    """
    if path.resolve() == BUNDLED_SAMPLE:
        return "mnist_onnx/runtime/bundled/sample.csv.gz (bundled)"
    return path.name


def edge_images(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Inputs outside the digit distribution: saturated, flat and noisy images.

    >>> images, names = edge_images()
    >>> images.shape, images.dtype, names[:2]
    ((7, 28, 28, 1), dtype('uint8'), ['all-black', 'all-white'])
    """
    rng = np.random.default_rng(seed)
    flat = [np.zeros((28, 28, 1), np.uint8), np.full((28, 28, 1), 255, np.uint8), np.full((28, 28, 1), 128, np.uint8)]
    noise = [rng.integers(0, 256, (28, 28, 1), dtype=np.uint8) for _ in range(3)]
    sparse = (rng.random((28, 28, 1)) < 0.1).astype(np.uint8) * 255
    names = ["all-black", "all-white", "mid-grey", "noise-1", "noise-2", "noise-3", "sparse-noise"]
    return np.stack([*flat, *noise, sparse]), names


def load_parity_images(
    csv: str | os.PathLike[str] | None = None,
    *,
    rows: int = DEFAULT_VALIDATION_ROWS,
    min_rows: int = MIN_VALIDATION_ROWS,
) -> ParityImages:
    """Read the first ``rows`` digits of a Kaggle CSV and append :func:`edge_images`.

    Args:
        csv: A Kaggle train-format or test-format CSV (may be gzipped); None for
            the bundled sample of 1,000 real held-out digits.
        rows: Use at most this many rows from the top of the file.
        min_rows: Fail if the file has fewer rows than this.

    Raises:
        CsvFormatError: If the CSV is malformed.
        MnistOnnxError: If it has fewer than ``min_rows`` rows.
    """
    path = Path(csv) if csv is not None else BUNDLED_SAMPLE
    if rows < min_rows:
        raise MnistOnnxError(f"expected at least {min_rows:,} validation rows, got a limit of {rows:,}")
    images, labels = [], []
    taken = 0
    for batch in iter_kaggle_csv(path, chunk_rows=min(rows, 4096)):
        need = rows - taken
        images.append(batch.images[:need])
        if batch.labels is not None:
            labels.append(batch.labels[:need])
        taken += min(len(batch), need)
        if taken >= rows:
            break
    real = np.concatenate(images)
    if len(real) < min_rows:
        raise MnistOnnxError(
            f"{path}: expected at least {min_rows:,} validation rows for the parity gate, got {len(real):,}"
        )
    edges, edge_names = edge_images()
    names = [f"{path.name} row {i}" for i in range(len(real))] + [f"edge input {n}" for n in edge_names]
    return ParityImages(
        images=np.concatenate([real, edges]),
        names=names,
        labels=np.concatenate(labels).astype(np.int64) if labels else None,
        real_rows=len(real),
        source=describe_path(path),
        source_sha256=sha256_file(path),
    )


def to_model_input(images: np.ndarray, layout: str, pixel_scale: float | None) -> np.ndarray:
    """uint8 (N, 28, 28, 1) → float32 in ``layout``, multiplied by ``pixel_scale`` (what the runtime does).

    With ``pixel_scale=None`` the pixels stay uint8 (the input of a uint8-input model).
    """
    x = images if pixel_scale is None else images.astype(np.float32) * np.float32(pixel_scale)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def run_onnxruntime(model_bytes: bytes, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Run a single-input, single-output model on the CPU in batches of ``batch_size``."""
    from ..runtime.session import create_session

    session = create_session(model_bytes, providers="cpu")
    input_name = session.get_inputs()[0].name
    outputs = [
        session.run(None, {input_name: x[start : start + batch_size]})[0] for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs)


@dataclass(frozen=True)
class _Comparison:
    """Reference and candidate probabilities of the same images, compared image by image.

    Attributes:
        diff: Largest absolute probability difference of each image (float64, N).
        mean_abs_diff: Mean absolute difference over every probability.
        ref_arg, cand_arg: Predicted digit of each image (N).
        near_tie: Images whose two best reference classes are within the tolerance (bool, N).
    """

    diff: np.ndarray
    mean_abs_diff: float
    ref_arg: np.ndarray
    cand_arg: np.ndarray
    near_tie: np.ndarray

    @property
    def bad_argmax(self) -> np.ndarray:
        """Images whose digit changed although they are no near-tie (int64 indices)."""
        return np.flatnonzero((self.ref_arg != self.cand_arg) & ~self.near_tie)

    def figures(self) -> dict[str, Any]:
        """The figures the parity report records (JSON types only)."""
        changed = self.ref_arg != self.cand_arg
        return {
            "images": int(len(self.diff)),
            "max_abs_diff": float(self.diff.max()),
            "mean_abs_diff": self.mean_abs_diff,
            "argmax_agreement": float(1.0 - changed.mean()),
            "argmax_changed_on_near_ties": int((changed & self.near_tie).sum()),
        }

    def failure(self, what: str, names: Sequence[str], atol: float) -> str | None:
        """One sentence on what exceeds the tolerance or changed digit, naming the worst images; None if nothing."""
        diff, bad_arg = self.diff, self.bad_argmax
        over = np.flatnonzero(diff > atol)
        if not len(over) and not len(bad_arg):
            return None
        parts = []
        if len(over):
            worst = over[np.argsort(-diff[over])][:5]
            shown = ", ".join(f"{names[i]} ({diff[i]:.3g})" for i in worst)
            parts.append(
                f"max |Keras - ONNX| probability difference {diff.max():.3g} > {atol:g} "
                f"on {len(over):,} of {len(diff):,} images, worst: {shown}"
            )
        if len(bad_arg):
            shown = ", ".join(f"{names[i]} (Keras {self.ref_arg[i]}, ONNX {self.cand_arg[i]})" for i in bad_arg[:5])
            parts.append(f"predicted digit differs on {len(bad_arg):,} images: {shown}")
        return f"{what}: " + "; ".join(parts)


def _compare(reference: np.ndarray, candidate: np.ndarray, atol: float) -> _Comparison:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64)).max(axis=1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    # A near-tie (Keras' two best classes within atol of each other) can swap
    # places under any rounding difference the tolerance allows, so a changed
    # argmax there is not evidence of a conversion error; such images are
    # counted and reported, every other image must keep its digit.
    near_tie = (top2[:, 1] - top2[:, 0]) <= atol
    return _Comparison(
        diff=diff,
        mean_abs_diff=float(np.abs(reference - candidate).mean()),
        ref_arg=reference.argmax(axis=1),
        cand_arg=candidate.argmax(axis=1),
        near_tie=near_tie,
    )


def check_parity(
    model: Any,
    keras_predict: Callable[[np.ndarray], np.ndarray],
    data: ParityImages,
    *,
    layout: str,
    pixel_scale: float,
    atol: float = DEFAULT_ATOL,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    model_name: str = "the exported model",
) -> dict[str, Any]:
    """Run the parity gate on an ``onnx.ModelProto``.

    Args:
        model: The exported ``onnx.ModelProto``.
        keras_predict: Maps float32 NHWC images to the Keras model's probabilities.
        data: Real digits and edge inputs (:func:`load_parity_images`).
        layout: The ONNX input layout, ``"NCHW"`` or ``"NHWC"``.
        pixel_scale: Factor from uint8 pixels to model input.
        atol: Largest allowed absolute difference of any probability.
        batch_sizes: onnxruntime batch sizes to run (at least two different ones).
        model_name: For messages.

    Returns:
        The parity figures (JSON-ready).

    Raises:
        GateError: If any check fails; the message gives the figures and names the images.
    """
    onnx = require("onnx", "export")
    from onnx.reference import ReferenceEvaluator

    if len(set(batch_sizes)) < 2 or min(batch_sizes) < 1:
        raise MnistOnnxError(f"expected at least two different positive batch sizes, got {list(batch_sizes)}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GateError(f"{model_name} fails onnx.checker (full check): {exc}") from None

    nhwc = to_model_input(data.images, "NHWC", pixel_scale)
    x = to_model_input(data.images, layout, pixel_scale)
    reference = np.asarray(keras_predict(nhwc), dtype=np.float32)
    model_bytes = model.SerializeToString()
    report: dict[str, Any] = {
        "passed": False,
        "atol": atol,
        "validation_source": data.source,
        "validation_sha256": data.source_sha256,
        "validation_rows": data.real_rows,
        "edge_inputs": data.names[data.real_rows :],
        "onnxruntime": {},
    }
    failures = []
    ort_probs = None
    for batch_size in batch_sizes:
        probs = run_onnxruntime(model_bytes, x, batch_size)
        if probs.shape != reference.shape:
            raise GateError(
                f"{model_name}: expected onnxruntime output shape {reference.shape} at batch size "
                f"{batch_size}, got {probs.shape}"
            )
        comparison = _compare(reference, probs, atol)
        report["onnxruntime"][f"batch_{batch_size}"] = comparison.figures()
        problem = comparison.failure(f"onnxruntime at batch size {batch_size}", data.names, atol)
        if problem:
            failures.append(problem)
        ort_probs = probs

    small = np.r_[0 : min(_REFERENCE_IMAGES - 3, data.real_rows), data.real_rows : data.real_rows + 3]
    evaluator = ReferenceEvaluator(model)
    input_name = model.graph.input[0].name
    ref_outputs = evaluator.run(None, {input_name: x[small]})
    if isinstance(ref_outputs, dict):  # only with intermediate=True, which this call does not ask for
        ref_outputs = list(ref_outputs.values())
    ref_probs = np.asarray(ref_outputs[0], dtype=np.float32)
    comparison = _compare(reference[small], ref_probs, atol)
    report["reference_evaluator"] = comparison.figures()
    problem = comparison.failure("onnx.reference.ReferenceEvaluator", [data.names[i] for i in small], atol)
    if problem:
        failures.append(problem)

    if data.labels is not None and ort_probs is not None:
        labels = data.labels
        real = slice(0, data.real_rows)
        report["keras_accuracy"] = float((reference[real].argmax(axis=1) == labels).mean())
        report["onnx_accuracy"] = float((ort_probs[real].argmax(axis=1) == labels).mean())
    report["checker"] = "onnx.checker.check_model(full_check=True) passed"
    if failures:
        raise GateError(f"{model_name} does not match the Keras model: " + " | ".join(failures))
    report["passed"] = True
    return report
