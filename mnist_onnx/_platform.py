"""Facts about this machine and its libraries, recorded with every model, report and benchmark.

The bottom floor of the package: export, train, bench (and the runtime) may
import it, so it imports only the standard library at module level.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from typing import Any

from . import __version__

__all__ = ["INT8_CPU_FLAGS", "library_versions", "cpu_int8_features"]

#: Distributions whose versions shape a training, export or runtime result.
_LIBRARIES = (
    "numpy",
    "pandas",
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-ep-openvino",
)

#: ``/proc/cpuinfo`` flags of the instruction sets onnxruntime's int8 kernels use.
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of Python, mnist-onnx and the installed libraries that shape a result.

    Args:
        extra: More distribution names to look up (e.g. a benchmark's contenders).

    Returns:
        Name -> version string, for Python, ``mnist-onnx`` and every listed
        distribution that is installed (those that are not are left out).

    >>> versions = library_versions(("no-such-distribution",))
    >>> "python" in versions and "mnist-onnx" in versions and "no-such-distribution" not in versions
    True
    """
    out = {"python": platform.python_version(), "mnist-onnx": __version__}
    for dist in (*_LIBRARIES, *extra):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def cpu_int8_features() -> dict[str, Any]:
    """The CPU model and the int8 instruction-set features onnxruntime's kernels use.

    Returns:
        ``{"model": str, "cpus": int | None, "avx2": bool, ...}``: one bool per
        name in :data:`INT8_CPU_FLAGS`, read from ``/proc/cpuinfo`` (all False
        where that file does not exist, i.e. outside Linux).
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": model, "cpus": os.cpu_count(), **{n: n in flags for n in INT8_CPU_FLAGS}}
