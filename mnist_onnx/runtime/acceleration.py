"""Which CPU execution provider a classifier runs on, and the checks that keep OpenVINO's answers honest.

* ``providers="auto"`` without CUDA: when the OpenVINO plugin is installed and
  loads, a short trial on the bundled held-out digits picks the faster of
  onnxruntime's CPU provider and OpenVINO for this model and batch size
  (:func:`mnist_onnx.runtime.tuning.choose_provider`, cached per machine).
  When OpenVINO wins, the same trial measures smaller calls, and calls below
  the crossover, or that OpenVINO would pad, run on a CPU-provider twin of
  the classifier (:class:`SmallCalls`), so small calls are not slowed down.
* Every classifier that runs on OpenVINO in f32 is checked once, when it is
  created: its labels on the 1,000 bundled held-out digits must equal the CPU
  provider's (:func:`check_label_parity`).
* ``precision="bf16"`` (fp32 model, bf16 compute in OpenVINO) passes the bf16
  gate on the same digits first (:func:`mnist_onnx.runtime.bf16_gate.bf16_gate`).

The functions take factories of predict functions, so this module needs
nothing from the classifier and the classifier can import it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingExtraError, ProviderError, ProviderFallbackWarning
from . import bf16_gate, tuning
from .openvino import OPENVINO, openvino_available, openvino_device, padded_size, plugin_installed, supports_bf16

__all__ = [
    "AUTO_MEASURE_ENV",
    "OPENVINO_NAMES",
    "wants_openvino",
    "sample_digits",
    "model_sha256",
    "check_label_parity",
    "TRIAL_SIZES",
    "provider_key",
    "choose_cpu_provider",
    "SmallCalls",
    "gate_bf16",
    "pick_provider",
    "verify_openvino",
    "forget_checks",
    "warn_fallback",
]

#: Set to ``0`` to keep ``providers="auto"`` on CUDA or the CPU provider without a trial (reproducible runs, tests).
AUTO_MEASURE_ENV = "MNIST_ONNX_AUTO_MEASURE"
#: What selects OpenVINO in ``providers``.
OPENVINO_NAMES = ("openvino", OPENVINO)

PredictFactory = Callable[[], tuning.Predict]
#: Digits per call in the provider trial: each predict function splits them into its own batches.
TRIAL_CHUNK = 256
#: Call sizes measured for the crossover when OpenVINO wins at :data:`TRIAL_CHUNK` (part of the cache key).
TRIAL_SIZES = (1, 16)


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
# (model sha256, bf16) already checked in this process: the check runs once per model and precision.
_verified: set[tuple[str, bool]] = set()


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
            f"(providers='cpu')"
        )
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
            :data:`TRIAL_CHUNK` bundled digits per call, then, when OpenVINO
            wins, :data:`TRIAL_SIZES` digits per call for the crossover.
        remeasure: Measure even when a choice is cached (``mnist-onnx tune``).
        cache: Where choices are kept; None is the user's cache directory.

    Returns:
        The :class:`~mnist_onnx.runtime.tuning.ProviderChoice`.
    """
    if not openvino_available():
        candidates = {"cpu": candidates["cpu"]}
    images, _, _ = sample_digits()
    return tuning.choose_provider(
        provider_key(sha256, batch_size),
        candidates,
        images,
        cache=cache,
        remeasure=remeasure,
        chunk=TRIAL_CHUNK,
        sizes=TRIAL_SIZES,
    )


def provider_key(sha256: str, batch_size: int) -> tuning.TrialKey:
    """The cache key of the provider choice for a model and batch size; it names the trial's call sizes, so a
    choice made by a different trial is measured again."""
    sizes = ",".join(str(s) for s in (*TRIAL_SIZES, TRIAL_CHUNK))
    return tuning.TrialKey("provider", sha256, batch_size, extra=(("trial_sizes", sizes),))


class SmallCalls:
    """Where the calls of a classifier that ``auto`` put on OpenVINO go: the CPU-provider twin of the classifier
    (built on first use, thread-safe) takes those the trial did not show OpenVINO winning.

    Those are calls below the measured crossover, and calls OpenVINO would pad
    (:func:`~.openvino.padded_size`: fewer images per run than its batch size
    and not a power of two), where it would do up to twice the work the trial timed.

    Args:
        choice: The classifier's provider choice (None: it was not measured, e.g. a pinned provider).
        on_openvino: Whether the classifier really runs on OpenVINO (False after a fallback).
        batch_size: The classifier's batch size on OpenVINO.
        make_cpu: Builds the same classifier on the CPU provider.
    """

    def __init__(
        self, choice: tuning.ProviderChoice | None, on_openvino: bool, batch_size: int, make_cpu: Callable[[], Any]
    ):
        self.choice = choice if choice is not None and on_openvino and choice.provider == "openvino" else None
        self.batch_size = batch_size
        self._make_cpu = make_cpu
        self._lock = threading.Lock()
        self._cpu: Any = None

    def runs_on_cpu(self, images: int, batch_size: int | None = None) -> bool:
        """Whether a call of ``images`` images, split into batches of ``batch_size`` (None: the classifier's),
        belongs on the CPU provider."""
        per_run = min(images, batch_size or self.batch_size)
        if self.choice is None or per_run < 1:  # a bad batch size is refused by the classifier itself
            return False
        return self.choice.runs_on_cpu(images) or padded_size(per_run, self.batch_size) != per_run

    def classifier_for(self, images: int, batch_size: int | None = None) -> Any:
        """The CPU-provider classifier for this call (see :meth:`runs_on_cpu`), or None to keep it on OpenVINO."""
        if not self.runs_on_cpu(images, batch_size):
            return None
        if self._cpu is None:
            with self._lock:
                if self._cpu is None:
                    self._cpu = self._make_cpu()
        return self._cpu


def gate_bf16(
    sha256: str,
    fp32: PredictFactory,
    bf16: PredictFactory,
    *,
    remeasure: bool = False,
    cache: tuning.TuneCache | None = None,
    min_agreement: float | None = None,
    max_accuracy_drop_pp: float | None = None,
) -> bf16_gate.Bf16Report:
    """Pass bf16 compute for this model on the bundled held-out digits (cached), or refuse it.

    Thresholds default to :data:`~.bf16_gate.BF16_MIN_AGREEMENT` and
    :data:`~.bf16_gate.BF16_MAX_ACCURACY_DROP_PP`, read when called.

    Raises:
        ProviderError: If this CPU has no bf16 compute or OpenVINO is unavailable.
        GateError: If bf16 fails the gate (the message holds the figures).
    """
    if not openvino_available():
        raise ProviderError(
            "precision bf16 runs on OpenVINO, which is not available here: pip install 'mnist-onnx[openvino]'"
        )
    if not supports_bf16():
        raise ProviderError(
            "precision bf16 needs a CPU with bf16 compute (AMX or AVX-512 BF16), which OpenVINO "
            "does not report on this machine; use precision fp32 or int8"
        )
    images, labels, sample_name = sample_digits()
    key = tuning.TrialKey("bf16-gate", sha256)
    return bf16_gate.bf16_gate(
        key,
        fp32,
        bf16,
        images,
        labels,
        evaluation=sample_name,
        cache=cache,
        remeasure=remeasure,
        min_agreement=bf16_gate.BF16_MIN_AGREEMENT if min_agreement is None else min_agreement,
        max_accuracy_drop_pp=(
            bf16_gate.BF16_MAX_ACCURACY_DROP_PP if max_accuracy_drop_pp is None else max_accuracy_drop_pp
        ),
    )


def _cuda_offered() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


_trial = threading.local()


def _trial_candidate(pinned: Callable[[str], Any], provider: str) -> tuning.Predict:
    """A classifier built only to be timed: the check of :func:`verify_openvino` is left to the one kept."""
    _trial.active = True
    try:
        return _predict_of(pinned(provider))
    finally:
        _trial.active = False


def _predict_of(classifier: Any) -> tuning.Predict:
    return lambda images: np.asarray(classifier.predict_proba(images))


def pick_provider(
    model_data: bytes,
    providers: Any,
    *,
    bf16: bool,
    batch_size: int | None,
    pinned: Callable[[str], Any],
    remeasure: bool = False,
) -> tuple[Any, tuning.ProviderChoice | None]:
    """The providers a classifier should open: ``providers`` as given, or the measured choice for ``"auto"``.

    Args:
        model_data: The serialized model (its sha256 keys the choice).
        providers: What the caller asked for.
        bf16: bf16 compute was asked for: only OpenVINO can do it.
        batch_size: The caller's batch size (None: each provider's default).
        pinned: Builds the same classifier pinned to ``"cpu"`` or ``"openvino"``
            (only called when a trial runs).
        remeasure: Run the trial even when a choice is cached.

    Returns:
        (providers to open, the trial's choice or None when none was made).

    Raises:
        ProviderError: If bf16 is asked for with providers other than auto/openvino.
    """
    is_auto = isinstance(providers, str) and providers.strip().lower() == "auto"
    if bf16:
        if not (is_auto or wants_openvino(providers)):
            raise ProviderError(
                f"precision bf16 runs on OpenVINO (--provider openvino or auto), got providers {providers!r}"
            )
        try:
            openvino_device()
        except ProviderError as exc:  # its "use --provider cpu" alone would then be refused for bf16
            raise type(exc)(f"{exc}; on the CPU provider, use precision fp32 (bf16 compute needs OpenVINO)") from None
        return "openvino", None
    measuring_off = os.environ.get(AUTO_MEASURE_ENV, "1").strip() == "0" and not remeasure
    if not is_auto or measuring_off or not plugin_installed() or _cuda_offered():
        return providers, None
    sha256 = model_sha256(model_data)
    if not remeasure:
        # A cached "cpu" needs no plugin: loading OpenVINO's libraries would only slow the start.
        cached = tuning.choice_from_entry(tuning.TuneCache().get(provider_key(sha256, batch_size or 0)), ["cpu"])
        if cached is not None:
            return "cpu", cached
    if not openvino_available():
        _warn_unavailable()
        return providers, None
    choice = choose_cpu_provider(
        sha256,
        batch_size or 0,
        {"cpu": lambda: _trial_candidate(pinned, "cpu"), "openvino": lambda: _trial_candidate(pinned, "openvino")},
        remeasure=remeasure,
    )
    return choice.provider, choice


def _warn_unavailable() -> None:
    """Say why ``auto`` stays on the CPU provider although the OpenVINO plugin is installed."""
    try:
        openvino_device()
    except MissingExtraError:  # not installed after all: auto means the CPU provider, nothing to warn about
        return
    except ProviderError as exc:
        warnings.warn(
            f"auto runs on onnxruntime's CPU provider: the OpenVINO plugin is installed but cannot be used ({exc})",
            ProviderFallbackWarning,
            stacklevel=4,
        )


def verify_openvino(classifier: Any, model_data: bytes, *, bf16: bool, pinned: Callable[[str], Any]) -> None:
    """The check of a classifier that runs on OpenVINO, once per process, model and precision.

    f32: its labels on the bundled held-out digits equal the CPU provider's
    (:func:`check_label_parity`).  bf16: the bf16 gate passes (cached).

    Raises:
        ProviderError: If the labels differ, or bf16 is not possible here.
        GateError: If bf16 fails its gate.
    """
    sha256 = model_sha256(model_data)
    with _reference_lock:
        if (sha256, bf16) in _verified or getattr(_trial, "active", False):
            return
    if bf16:
        gate_bf16(sha256, lambda: _predict_of(pinned("cpu")), lambda: _predict_of(classifier))
    else:
        check_label_parity(classifier.model_name, sha256, _predict_of(classifier), lambda: _predict_of(pinned("cpu")))
    with _reference_lock:
        _verified.add((sha256, bf16))


def forget_checks() -> None:
    """Forget which models this process has checked, so the next classifier on OpenVINO checks again."""
    with _reference_lock:
        _verified.clear()
        _cpu_reference.clear()


def warn_fallback(model_name: str, error: Exception) -> None:
    """Say that ``auto`` chose OpenVINO but its check failed, so the CPU provider runs the model."""
    warnings.warn(
        f"{model_name} runs on onnxruntime's CPU provider: OpenVINO was faster here but failed its check ({error})",
        ProviderFallbackWarning,
        stacklevel=3,
    )
