"""Facts about the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

from .._platform import cpu_int8_features, library_versions

__all__ = ["cpu_info", "versions", "gpu_info"]

#: Benchmark contenders beyond the libraries every result records.
_CONTENDER_LIBRARIES = ("ai-edge-litert",)


def cpu_info() -> dict[str, Any]:
    """CPU model, core counts, memory, and the int8-relevant instruction set flags (VNNI, AMX)."""
    features = cpu_int8_features()
    model = features.pop("model")
    logical = features.pop("cpus")
    info: dict[str, Any] = {
        "model": model,
        "logical_cores": logical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical,
        "physical_cores": None,
        "memory_gib": None,
        "int8_features": features,
        "machine": platform.machine(),
        "system": platform.platform(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def gpu_info() -> dict[str, Any]:
    """Whether this onnxruntime build offers CUDA, and the visible GPUs' names (from ``nvidia-smi``)."""
    import shutil
    import subprocess

    import onnxruntime as ort

    info: dict[str, Any] = {"onnxruntime_providers": ort.get_available_providers(), "gpus": []}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            info["gpus"] = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def versions() -> dict[str, str]:
    """Versions of Python and of every library a contender uses (those installed)."""
    return library_versions(_CONTENDER_LIBRARIES)
