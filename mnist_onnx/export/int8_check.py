"""How an int8 model compares with its fp32 source: the accuracy gate's figures, verdict and timing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .parity import run_onnxruntime

__all__ = ["MIN_AGREEMENT", "MAX_ACCURACY_DROP", "Int8Comparison", "compare_int8", "gate_failures", "latency"]

#: Share of held-out digits on which int8 must predict the same digit as fp32.
MIN_AGREEMENT = 0.998
#: Largest allowed accuracy loss of int8 against fp32 (0.1 percentage points).
MAX_ACCURACY_DROP = 0.001
_EVAL_BATCH = 512


@dataclass(frozen=True)
class Int8Comparison:
    """Both models' predictions on the same labelled digits, counted in images.

    Attributes:
        rows: Labelled digits compared.
        fp32_correct: Digits the fp32 model predicts right.
        int8_correct: Digits the int8 model predicts right.
        changed_rows: Row indices (int64, 0-based) where the two predict different digits.
    """

    rows: int
    fp32_correct: int
    int8_correct: int
    changed_rows: np.ndarray

    @property
    def disagreements(self) -> int:
        """Digits on which the two models differ."""
        return len(self.changed_rows)

    @property
    def agreement(self) -> float:
        """Share of digits on which the two models predict the same digit."""
        return (self.rows - self.disagreements) / self.rows

    @property
    def fp32_accuracy(self) -> float:
        """Accuracy of the fp32 model (fraction)."""
        return self.fp32_correct / self.rows

    @property
    def int8_accuracy(self) -> float:
        """Accuracy of the int8 model (fraction)."""
        return self.int8_correct / self.rows

    @property
    def accuracy_drop_pp(self) -> float:
        """Accuracy lost by int8, in percentage points (negative when int8 is better)."""
        return (self.fp32_correct - self.int8_correct) / self.rows * 100

    def figures(self) -> dict[str, Any]:
        """The figures as the quantization report records them (JSON types only)."""
        return {
            "rows": self.rows,
            "fp32_accuracy": self.fp32_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "accuracy_drop_pp": self.accuracy_drop_pp,
            "agreement": self.agreement,
            "disagreements": self.disagreements,
            "fp32_correct": self.fp32_correct,
            "int8_correct": self.int8_correct,
        }


def compare_int8(
    fp32_bytes: bytes,
    int8_bytes: bytes,
    x: np.ndarray,
    labels: np.ndarray,
    batch_size: int = _EVAL_BATCH,
    *,
    int8_x: np.ndarray | None = None,
) -> Int8Comparison:
    """Accuracy of both models and their agreement on inputs ``x`` (model layout and scale).

    Args:
        fp32_bytes, int8_bytes: The two serialized ONNX models.
        x: The fp32 model's input, N×... float32 in its layout and scale.
        labels: The N true digits (int).
        batch_size: Images per onnxruntime call.
        int8_x: The int8 model's input when it differs from ``x`` (the raw
            uint8 pixels of a model made with ``uint8_input``).
    """
    fp32 = run_onnxruntime(fp32_bytes, x, batch_size).argmax(axis=1)
    int8 = run_onnxruntime(int8_bytes, x if int8_x is None else int8_x, batch_size).argmax(axis=1)
    return Int8Comparison(
        rows=len(labels),
        fp32_correct=int((fp32 == labels).sum()),
        int8_correct=int((int8 == labels).sum()),
        changed_rows=np.flatnonzero(fp32 != int8),
    )


def gate_failures(comparison: Int8Comparison, min_agreement: float, max_accuracy_drop: float) -> list[str]:
    """The accuracy gate's verdict on a comparison: one sentence per failed condition (empty: passed).

    Counted in images, so on 1,000 digits 99.8% agreement allows 2 changed
    predictions and a 0.1 pp drop allows 1 more error.

    >>> passing = Int8Comparison(rows=1000, fp32_correct=990, int8_correct=989, changed_rows=np.array([5, 9]))
    >>> gate_failures(passing, 0.998, 0.001)
    []
    >>> len(gate_failures(passing, 0.999, 0.0))
    2
    """
    c, n = comparison, comparison.rows
    failures = []
    if n - c.disagreements < min_agreement * n - 1e-9:
        rows = ", ".join(str(r) for r in c.changed_rows[:10])
        failures.append(
            f"int8 and fp32 agree on {c.agreement:.2%} of {n:,} digits "
            f"({c.disagreements} differ, rows {rows}{', ...' if c.disagreements > 10 else ''}), "
            f"expected at least {min_agreement:.2%}"
        )
    if c.fp32_correct - c.int8_correct > max_accuracy_drop * n + 1e-9:
        failures.append(
            f"accuracy drops {c.accuracy_drop_pp:.2f} pp "
            f"({c.fp32_accuracy:.2%} → {c.int8_accuracy:.2%}), "
            f"expected at most {max_accuracy_drop * 100:.2f} pp"
        )
    return failures


def latency(model_bytes: bytes, x: np.ndarray) -> dict[str, float]:
    """Best-of-3 onnxruntime CPU latency at batch 1 (ms) and per image at batch 512 (µs).

    Args:
        model_bytes: A serialized ONNX model.
        x: At least one input image in the model's layout, scale and dtype.
    """
    from ..runtime.session import create_session

    session = create_session(model_bytes, providers="cpu")
    name = session.get_inputs()[0].name
    one, big = x[:1], np.resize(x, (512, *x.shape[1:]))
    session.run(None, {name: big})
    best1 = best512 = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(20):
            session.run(None, {name: one})
        best1 = min(best1, (time.perf_counter() - start) / 20)
        start = time.perf_counter()
        session.run(None, {name: big})
        best512 = min(best512, time.perf_counter() - start)
    return {"batch_1_ms": round(best1 * 1e3, 3), "batch_512_per_image_us": round(best512 / 512 * 1e6, 1)}
