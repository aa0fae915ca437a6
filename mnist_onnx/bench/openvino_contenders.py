"""The OpenVINO contenders of ``mnist-onnx bench``, their end-to-end runs and their targets.

Added to the benchmark when the ``openvino`` extra's plugin loads: our runtime
on OpenVINO (int8 and fp32 at f32 precision, the gated bf16 option), the
``auto`` choice, and, end to end, pandas + LiteRT int8 as the baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._fileio import atomic_path
from .contenders import Contender, ours

__all__ = ["openvino_contenders", "openvino_end_to_end", "openvino_targets", "bf16_features"]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def bf16_features() -> dict[str, bool]:
    """Whether the CPU lists the bf16 features OpenVINO uses (Linux ``/proc/cpuinfo``; all False elsewhere)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        pass
    return {flag: flag in flags for flag in _BF16_FLAGS}


def openvino_contenders(
    onnx_model: str | os.PathLike[str], int8_model: str | os.PathLike[str], threads: int | None, notes: list[str]
) -> list[Contender]:
    """Our runtime on OpenVINO (f32 int8 and fp32, bf16 when it passes its gate) and ``auto`` for int8."""
    from ..errors import GateError, ProviderError
    from ..runtime.openvino import openvino_available

    if not openvino_available():
        notes.append(
            "OpenVINO figures skipped: the plugin is not installed or does not load here "
            "(pip install 'mnist-onnx[openvino]')."
        )
        return []
    fp32, int8 = Path(onnx_model), Path(int8_model)
    found = [
        ours(int8, "int8", threads=threads, providers="openvino"),
        ours(fp32, "fp32", threads=threads, providers="openvino"),
        ours(int8, "int8", threads=threads, providers="auto"),
    ]
    try:
        bf16 = ours(fp32, "bf16", threads=threads, providers="openvino")
    except (GateError, ProviderError) as exc:
        notes.append(f"bf16 skipped: {exc}")
    else:
        found.append(bf16)
    return found


def openvino_end_to_end(
    onnx_model: str | os.PathLike[str],
    int8_model: str | os.PathLike[str],
    litert_int8: Callable[[np.ndarray], Any],
    threads: int | None,
) -> dict[str, Callable[[Path, Path], Any]]:
    """End-to-end runs: ours int8 on OpenVINO and on ``auto``, and pandas + LiteRT int8 (batch 512)."""
    from ..runtime.kaggle_csv import PIXEL_COLUMNS
    from ..runtime.openvino import openvino_available
    from ..runtime.predictor import predict_csv

    def pandas_litert(csv: Path, dest: Path) -> None:
        import pandas as pd

        pixels = pd.read_csv(csv)[list(PIXEL_COLUMNS)].to_numpy(np.uint8).reshape(-1, 28, 28, 1)
        parts = []
        for start in range(0, len(pixels), 512):
            chunk = pixels[start : start + 512]
            full = chunk if len(chunk) == 512 else np.resize(chunk, (512, 28, 28, 1))
            parts.append(np.asarray(litert_int8(full))[: len(chunk)].argmax(axis=1))
        labels = np.concatenate(parts)
        with atomic_path(dest, suffix=".csv") as tmp:
            pd.DataFrame({"ImageId": np.arange(1, len(labels) + 1), "Label": labels}).to_csv(tmp, index=False)

    def ours_on(providers: str) -> Callable[[Path, Path], Any]:
        def run(csv: Path, dest: Path) -> Any:
            return predict_csv(csv, int8_model, threads=threads, output=dest, providers=providers)

        return run

    runs: dict[str, Callable[[Path, Path], Any]] = {"pandas+litert-int8": pandas_litert}
    if openvino_available():
        runs["ours-int8-openvino"] = ours_on("openvino")
        runs["ours-int8-auto"] = ours_on("auto")
    return runs


def openvino_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenVINO targets, as ratios measured in this run (``met`` None when a figure is missing).

    None at all when OpenVINO did not run; no bf16 row when bf16 was refused by its gate (a note says so).
    """
    if "ours-int8-openvino" not in results["timings"]:
        return []
    batches = results["config"]["batch_sizes"]
    big = max(batches)
    rows: list[dict[str, Any]] = []

    def tp(name: str, batch: int) -> float | None:
        cell = results["timings"].get(name, {}).get(str(batch))
        return None if cell is None else cell["throughput_ips"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    def add(what: str, value: float | None, threshold: float) -> None:
        rows.append(
            {
                "target": what,
                "value": value,
                "threshold": threshold,
                "direction": ">=",
                "met": None if value is None else value >= threshold,
            }
        )

    add(
        f"ours int8 on OpenVINO / LiteRT int8 throughput at batch {big}",
        ratio(tp("ours-int8-openvino", big), tp("litert-int8", big)),
        2.0,
    )
    add(
        f"ours fp32 on OpenVINO (f32, parity) / LiteRT fp32 throughput at batch {big}",
        ratio(tp("ours-fp32-openvino", big), tp("litert-fp32", big)),
        1.3,
    )
    if "ours-bf16-openvino" in results["timings"]:
        add(
            f"ours bf16 (gated) / ours fp32 on the CPU provider throughput at batch {big}",
            ratio(tp("ours-bf16-openvino", big), tp("ours-fp32", big)),
            4.0,
        )
    for b in batches:
        add(
            f"ours int8 auto / ours int8 CPU provider throughput at batch {b} (never slower)",
            ratio(tp("ours-int8-auto", b), tp("ours-int8", b)),
            0.95,
        )
    e2e = results.get("end_to_end", {})

    def e2e_s(name: str) -> float | None:
        return e2e.get(name, {}).get("median_s")

    best = min((s for s in (e2e_s("ours-int8-openvino"), e2e_s("ours-int8-auto")) if s is not None), default=None)
    add(
        "end to end: pandas + LiteRT int8 / ours int8 (OpenVINO or auto, the faster) time",
        ratio(e2e_s("pandas+litert-int8"), best),
        2.0,
    )
    add(
        "end to end: pandas + Keras model.predict / ours int8 (OpenVINO or auto, the faster) time",
        ratio(e2e_s("pandas+keras-predict"), best),
        6.0,
    )
    return rows
