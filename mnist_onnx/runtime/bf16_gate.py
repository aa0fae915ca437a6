"""The bf16 gate: bf16 compute in OpenVINO for an fp32 model, passed only when it keeps fp32's answers.

It compares bf16 with fp32 on labelled held-out digits: it passes when the
labels agree on at least :data:`BF16_MIN_AGREEMENT` of them and accuracy drops
by at most :data:`BF16_MAX_ACCURACY_DROP_PP` points; its verdict is cached in
the measured-choices cache (:class:`~mnist_onnx.runtime.tuning.TuneCache`)
under a :class:`~mnist_onnx.runtime.tuning.TrialKey`, without the batch size.

Like :mod:`mnist_onnx.runtime.tuning`, it takes plain callables (uint8 images
in, probabilities out) and imports nothing of the classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import GateError, MnistOnnxError
from .tuning import Predict, TrialKey, TuneCache, utc_now

__all__ = ["BF16_MIN_AGREEMENT", "BF16_MAX_ACCURACY_DROP_PP", "Bf16Report", "evaluate_bf16", "bf16_gate"]

#: The bf16 gate, as for int8 quantization: label agreement with fp32 and accuracy drop (points).
BF16_MIN_AGREEMENT = 0.998
BF16_MAX_ACCURACY_DROP_PP = 0.1


@dataclass(frozen=True)
class Bf16Report:
    """bf16 against fp32 on labelled held-out digits.

    Attributes:
        evaluation: What the digits were (name and sha256 or row count).
        rows: Digits compared.
        agreement: Share of digits where bf16 and fp32 give the same label.
        disagreements: Their number.
        fp32_accuracy, bf16_accuracy: Shares of digits labelled right.
        accuracy_drop_pp: (fp32 - bf16) accuracy in percentage points.
        max_abs_diff: Largest |p_bf16 - p_fp32| over all probabilities.
        min_agreement, max_accuracy_drop_pp: The thresholds applied.
        passed: Whether both thresholds are met.
    """

    evaluation: str
    rows: int
    agreement: float
    disagreements: int
    fp32_accuracy: float
    bf16_accuracy: float
    accuracy_drop_pp: float
    max_abs_diff: float
    min_agreement: float
    max_accuracy_drop_pp: float
    passed: bool

    def summary(self) -> str:
        """One line with the figures and thresholds."""
        return (
            f"bf16 vs fp32 on {self.rows:,} held-out digits ({self.evaluation}): agreement "
            f"{self.agreement:.3%} ({self.disagreements} differ; needed >= {self.min_agreement:.1%}), accuracy "
            f"{self.fp32_accuracy:.3%} -> {self.bf16_accuracy:.3%} (drop {self.accuracy_drop_pp:.3f} points; "
            f"allowed <= {self.max_accuracy_drop_pp:g}), max |p diff| {self.max_abs_diff:.1e}"
        )


def evaluate_bf16(
    fp32: np.ndarray,
    bf16: np.ndarray,
    labels: np.ndarray,
    *,
    evaluation: str,
    min_agreement: float = BF16_MIN_AGREEMENT,
    max_accuracy_drop_pp: float = BF16_MAX_ACCURACY_DROP_PP,
) -> Bf16Report:
    """Compare bf16 probabilities with fp32 ones (both (N, 10)) against ``labels`` (N,).

    >>> p = np.eye(10, dtype=np.float32)[[1, 2, 3]]
    >>> evaluate_bf16(p, p, np.array([1, 2, 4]), evaluation="toy").passed
    True
    """
    if fp32.shape != bf16.shape or fp32.ndim != 2 or len(labels) != len(fp32) or len(fp32) == 0:
        raise MnistOnnxError(
            f"expected two (N, 10) probability arrays and N labels, got {fp32.shape}, "
            f"{bf16.shape} and {len(labels)} labels"
        )
    a, b = fp32.argmax(axis=1), bf16.argmax(axis=1)
    fp32_acc, bf16_acc = float((a == labels).mean()), float((b == labels).mean())
    agreement = float((a == b).mean())
    drop = (fp32_acc - bf16_acc) * 100
    return Bf16Report(
        evaluation,
        int(len(labels)),
        agreement,
        int((a != b).sum()),
        fp32_acc,
        bf16_acc,
        drop,
        float(np.abs(fp32 - bf16).max()),
        min_agreement,
        max_accuracy_drop_pp,
        agreement >= min_agreement and drop <= max_accuracy_drop_pp + 1e-9,
    )


def bf16_gate(
    key: TrialKey,
    fp32: Callable[[], Predict],
    bf16: Callable[[], Predict],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    evaluation: str,
    cache: TuneCache | None = None,
    remeasure: bool = False,
    min_agreement: float = BF16_MIN_AGREEMENT,
    max_accuracy_drop_pp: float = BF16_MAX_ACCURACY_DROP_PP,
) -> Bf16Report:
    """Pass or refuse bf16 compute for a model, from the cache or by evaluating it.

    Args:
        key: What the verdict depends on (``purpose="bf16-gate"``); the
            thresholds are added to it, so forced thresholds never reuse a
            verdict reached under others.
        fp32, bf16: Factories of the two predict functions (called only when evaluating).
        images, labels: Labelled held-out uint8 digits (N, 28, 28) and labels (N,).
        evaluation: Their name for the report (file and sha256).
        cache: Where verdicts are kept; None is :class:`TuneCache` ().
        remeasure: Evaluate again even when a verdict is cached.
        min_agreement, max_accuracy_drop_pp: The thresholds.

    Returns:
        The passing :class:`Bf16Report`.

    Raises:
        GateError: If bf16 fails a threshold (now or in the cached verdict);
            the message holds the figures.
    """
    cache = cache if cache is not None else TuneCache()
    key = TrialKey(
        key.purpose,
        key.model_sha256,
        key.batch_size,
        key.machine,
        key.versions,
        tuple(
            sorted(
                {
                    **dict(key.extra),
                    "evaluation": evaluation,
                    "min_agreement": repr(min_agreement),
                    "max_accuracy_drop_pp": repr(max_accuracy_drop_pp),
                }.items()
            )
        ),
    )
    entry = None if remeasure else cache.get(key)
    if entry is not None:
        try:
            report = Bf16Report(**entry["report"])
        except (KeyError, TypeError):
            report = None
    else:
        report = None
    if report is None:
        probs = {}
        for name, make in (("fp32", fp32), ("bf16", bf16)):
            predict = make()
            probs[name] = np.concatenate([predict(images[i : i + 256]) for i in range(0, len(images), 256)])
        report = evaluate_bf16(
            probs["fp32"],
            probs["bf16"],
            labels,
            evaluation=evaluation,
            min_agreement=min_agreement,
            max_accuracy_drop_pp=max_accuracy_drop_pp,
        )
        cache.put(key, {"report": asdict(report), "measured_at": utc_now(), "key": asdict(key)})
    if not report.passed:
        raise GateError(f"bf16 refused for this model: {report.summary()}; use precision fp32 (or the int8 model)")
    return report
