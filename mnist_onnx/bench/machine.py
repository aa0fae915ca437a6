"""Facts about the machine a benchmark ran on."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from typing import Any

_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx2")


def cpu_info() -> dict[str, Any]:
    """CPU model, logical core count, and the int8-relevant instruction set flags."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "int8_features": {flag: flag in flags for flag in _INT8_FLAGS},
        "machine": platform.machine(),
        "system": platform.platform(),
    }


def versions() -> dict[str, str]:
    """Versions of every library a contender uses."""
    out = {"python": platform.python_version()}
    for dist in ("mnist-onnx", "numpy", "pandas", "onnxruntime", "onnxruntime-gpu", "onnx", "tensorflow", "keras",
                 "tf2onnx", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
