"""Which CPU execution provider a classifier runs on, and the checks that keep OpenVINO's answers honest.

* ``providers="auto"`` without CUDA: when the OpenVINO plugin is installed and
  loads, a short trial on the bundled held-out digits picks the faster of
  onnxruntime's CPU provider and OpenVINO for this model and batch size
  (:func:`mnist_onnx.runtime.tuning.choose_provider`, cached per machine).
* Every classifier that runs on OpenVINO in f32 is checked once, when it is
  created: its labels on the 1,000 bundled held-out digits must equal the CPU
  provider's (:func:`check_label_parity`).
* ``precision="bf16"`` (fp32 model, bf16 compute in OpenVINO) passes the bf16
  gate on the same digits first (:func:`mnist_onnx.runtime.tuning.bf16_gate`).

The functions take factories of predict functions, so this module needs
nothing from the classifier and the classifier can import it.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProviderError
from . import tuning
from .openvino import OPENVINO, openvino_available, supports_bf16

__all__ = [
    "OPENVINO_NAMES",
    "wants_openvino",
    "sample_digits",
    "model_sha256",
    "check_label_parity",
    "choose_cpu_provider",
    "gate_bf16",
]

#: What selects OpenVINO in ``providers``.
OPENVINO_NAMES = ("openvino", OPENVINO)

PredictFactory = Callable[[], tuning.Predict]


def wants_openvino(providers: str | Sequence[Any]) -> bool:
    """Whether a provider request names OpenVINO (``"openvino"``, its onnxruntime name, or a pair with it)."""
    if isinstance(providers, str):
        return providers.strip() in (OPENVINO, "openvino") or providers.strip().lower() == "openvino"
    return any((p[0] if isinstance(p, tuple) else p) == OPENVINO for p in providers)


@functools.lru_cache(maxsize=1)
def sample_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """The bundled held-out digits: uint8 images (1000, 28, 28), int64 labels, and a name with their sha256."""
    from .kaggle_csv import read_kaggle_csv
    from .model_source import bundled_sample_path

    path = Path(bundled_sample_path())
    batch = read_kaggle_csv(path)
    if batch.labels is None:  # the bundled file always has labels; guard against a damaged installation
        raise ProviderError(f"{path}: the bundled sample has no labels; reinstall mnist-onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    images = np.ascontiguousarray(batch.images.reshape(len(batch.images), 28, 28))
    return images, batch.labels.astype(np.int64), f"bundled {path.name} (sha256 {digest[:12]})"


def model_sha256(data: bytes) -> str:
    """sha256 of a serialized model (a key of every measured choice)."""
    return hashlib.sha256(data).hexdigest()


_reference_lock = threading.Lock()
_cpu_reference: dict[str, np.ndarray] = {}


def check_label_parity(model_name: str, sha256: str, openvino: tuning.Predict, cpu: PredictFactory) -> float:
    """Check that OpenVINO gives the CPU provider's labels on every bundled held-out digit.

    The CPU provider's probabilities are computed once per process and model.

    Args:
        model_name: For the message.
        sha256: The model's sha256 (the CPU reference's key).
        openvino: The classifier's predict function on OpenVINO.
        cpu: Factory of the same model's predict function on the CPU provider.

    Returns:
        The largest |p_openvino - p_cpu| (for reports).

    Raises:
        ProviderError: If any label differs; the message gives the count and
            the largest difference, and says how to run on the CPU provider.
    """
    images, _, sample_name = sample_digits()
    with _reference_lock:
        reference = _cpu_reference.get(sha256)
    if reference is None:
        reference = np.asarray(cpu()(images))
        with _reference_lock:
            _cpu_reference[sha256] = reference
    got = np.asarray(openvino(images))
    differ = int((got.argmax(axis=1) != reference.argmax(axis=1)).sum())
    max_diff = float(np.abs(got - reference).max())
    if differ:
        raise ProviderError(
            f"{model_name}: OpenVINO labels {differ} of {len(images):,} held-out digits ({sample_name}) differently "
            f"from onnxruntime's CPU provider (max |p difference| {max_diff:.1e}); run it with --provider cpu "
            f"(providers='cpu')")
    return max_diff


def choose_cpu_provider(
    sha256: str,
    batch_size: int,
    candidates: dict[str, PredictFactory],
    *,
    remeasure: bool = False,
    cache: tuning.TuneCache | None = None,
) -> tuning.ProviderChoice:
    """``"cpu"`` or ``"openvino"`` for this model and batch size, measured once per machine and cached.

    Args:
        sha256: The model's sha256.
        batch_size: The batch size the classifier will run (a key of the choice).
        candidates: ``{"cpu": factory, "openvino": factory}``; factories of
            predict functions that batch by themselves: the trial hands each
            all 1,000 bundled digits per call.
        remeasure: Measure even when a choice is cached (``mnist-onnx tune``).
        cache: Where choices are kept; None is the user's cache directory.

    Returns:
        The :class:`~mnist_onnx.runtime.tuning.ProviderChoice`.
    """
    if not openvino_available():
        candidates = {"cpu": candidates["cpu"]}
    images, _, _ = sample_digits()
    key = tuning.TrialKey("provider", sha256, batch_size)
    return tuning.choose_provider(key, candidates, images, cache=cache, remeasure=remeasure, chunk=len(images))


def gate_bf16(sha256: str, fp32: PredictFactory, bf16: PredictFactory, *, remeasure: bool = False,
              cache: tuning.TuneCache | None = None, min_agreement: float = tuning.BF16_MIN_AGREEMENT,
              max_accuracy_drop_pp: float = tuning.BF16_MAX_ACCURACY_DROP_PP) -> tuning.Bf16Report:
    """Pass bf16 compute for this model on the bundled held-out digits (cached), or refuse it.

    Raises:
        ProviderError: If this CPU has no bf16 compute or OpenVINO is unavailable.
        GateError: If bf16 fails the gate (the message holds the figures).
    """
    if not openvino_available():
        raise ProviderError("precision bf16 runs on OpenVINO, which is not available here: "
                            "pip install 'mnist-onnx[openvino]'")
    if not supports_bf16():
        raise ProviderError("precision bf16 needs a CPU with bf16 compute (AMX or AVX-512 BF16), which OpenVINO "
                            "does not report on this machine; use precision fp32 or int8")
    images, labels, sample_name = sample_digits()
    key = tuning.TrialKey("bf16-gate", sha256)
    return tuning.bf16_gate(key, fp32, bf16, images, labels, evaluation=sample_name, cache=cache,
                            remeasure=remeasure, min_agreement=min_agreement,
                            max_accuracy_drop_pp=max_accuracy_drop_pp)
