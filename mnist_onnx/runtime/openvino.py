"""onnxruntime's OpenVINO execution provider, shipped as a plugin (the ``openvino`` extra).

The PyPI package ``onnxruntime-ep-openvino`` installs beside the ordinary
``onnxruntime`` wheel.  Its library is registered once per process with
``onnxruntime.register_execution_provider_library``; a session then takes it
with ``SessionOptions.add_provider_for_devices`` for the plugin's CPU device.
Naming ``OpenVINOExecutionProvider`` in ``InferenceSession(providers=...)``
does *not* work for a plugin: measured with onnxruntime 1.32.0 and the plugin
1.8.1, such a session silently runs on the CPU provider alone.

Precision: OpenVINO computes in bf16 by default on CPUs that have it (AVX-512
BF16 or AMX), which moved the bundled models' probabilities by up to 9.9e-3
(fp32) and 2.3e-2 (int8) from the CPU provider's on the bundled 1,000 digits.
With ``INFERENCE_PRECISION_HINT`` ``f32`` (the default here) they stay within
1.2e-6 and 2.6e-6.  OpenVINO's own ``precision`` provider option had no
effect in that measurement; only the ``load_config`` property does.  bf16 is
opt-in (``precision="bf16"``) behind the accuracy gate in
:mod:`mnist_onnx.runtime.bf16_gate`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from ..errors import MissingExtraError, MnistOnnxError, ProviderError

__all__ = [
    "OPENVINO",
    "PLUGIN_DISTRIBUTION",
    "INSTALL_HINT",
    "OpenVINOConfig",
    "OpenVINOUnavailableError",
    "plugin_installed",
    "plugin_version",
    "openvino_device",
    "openvino_available",
    "supports_bf16",
    "add_openvino",
    "create_openvino_session",
    "padded_size",
    "run_padded",
]

#: onnxruntime's name for the provider (what ``session.get_providers()`` reports).
OPENVINO = "OpenVINOExecutionProvider"
#: The PyPI distribution of the plugin, and the module it installs.
PLUGIN_DISTRIBUTION = "onnxruntime-ep-openvino"
_PLUGIN_MODULE = "onnxruntime_ep_openvino"
#: The name the library is registered under in this process.
_REGISTRATION_NAME = "mnist_onnx_openvino"
INSTALL_HINT = "pip install 'mnist-onnx[openvino]'"

InferencePrecision = Literal["f32", "bf16"]
PerformanceHint = Literal["LATENCY", "THROUGHPUT"]


class OpenVINOUnavailableError(ProviderError):
    """The OpenVINO plugin is installed but cannot run here (it failed to load, or offers no CPU device)."""


@dataclass(frozen=True)
class OpenVINOConfig:
    """OpenVINO CPU properties for one session.

    Attributes:
        precision: ``INFERENCE_PRECISION_HINT``: ``"f32"`` (parity with the CPU
            provider) or ``"bf16"`` (faster on CPUs with AMX or AVX-512 BF16;
            only behind the accuracy gate).
        performance_hint: ``PERFORMANCE_HINT`` (``"LATENCY"`` or
            ``"THROUGHPUT"``), None for OpenVINO's default.
        num_streams: ``NUM_STREAMS``, None for OpenVINO's default.
        threads: ``INFERENCE_NUM_THREADS``, None for OpenVINO's default (all cores).
    """

    precision: InferencePrecision = "f32"
    performance_hint: PerformanceHint | None = None
    num_streams: int | None = None
    threads: int | None = None

    def properties(self) -> dict[str, str]:
        """The OpenVINO CPU properties, as strings.

        >>> OpenVINOConfig().properties()
        {'INFERENCE_PRECISION_HINT': 'f32'}
        """
        if self.precision not in ("f32", "bf16"):
            raise MnistOnnxError(f"expected OpenVINO precision 'f32' or 'bf16', got {self.precision!r}")
        props: dict[str, str] = {"INFERENCE_PRECISION_HINT": self.precision}
        if self.performance_hint is not None:
            if self.performance_hint not in ("LATENCY", "THROUGHPUT"):
                raise MnistOnnxError(
                    f"expected performance_hint 'LATENCY' or 'THROUGHPUT', got {self.performance_hint!r}"
                )
            props["PERFORMANCE_HINT"] = self.performance_hint
        for key, value in (("NUM_STREAMS", self.num_streams), ("INFERENCE_NUM_THREADS", self.threads)):
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise MnistOnnxError(f"expected {key} to be a positive integer, got {value!r}")
                props[key] = str(value)
        return props

    def provider_options(self) -> dict[str, str]:
        """Options for ``SessionOptions.add_provider_for_devices`` (the properties go in ``load_config``)."""
        return {"load_config": json.dumps({"CPU": self.properties()})}


_lock = threading.Lock()
_device: Any = None
_failure: Exception | None = None


def plugin_installed() -> bool:
    """Whether the ``onnxruntime-ep-openvino`` package is importable (nothing is loaded)."""
    return importlib.util.find_spec(_PLUGIN_MODULE) is not None


def plugin_version() -> str | None:
    """The installed plugin's version, or None when it is not installed."""
    try:
        return metadata.version(PLUGIN_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def _registered_device() -> Any:
    devices = [d for d in ort.get_ep_devices() if d.ep_name == OPENVINO]
    cpu = [d for d in devices if d.ep_metadata.get("ov_device") == "CPU" and "ov_meta_device" not in d.ep_metadata]
    return cpu[0] if cpu else (devices[0] if devices else None)


def _load() -> Any:
    if not hasattr(ort, "register_execution_provider_library") or not hasattr(ort, "get_ep_devices"):
        raise OpenVINOUnavailableError(
            f"the OpenVINO plugin needs onnxruntime 1.23 or later, this is {ort.__version__}: {INSTALL_HINT}"
        )
    device = _registered_device()  # registered already, by us or by the application
    if device is not None:
        return device
    try:
        plugin = importlib.import_module(_PLUGIN_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _PLUGIN_MODULE:  # the plugin is there; something it imports is not
            raise _broken_import(exc) from None
        raise MissingExtraError("openvino", PLUGIN_DISTRIBUTION) from None
    except ImportError as exc:  # installed, but it fails to import (a missing or mismatched shared library)
        raise _broken_import(exc) from None
    try:
        ort.register_execution_provider_library(_REGISTRATION_NAME, plugin.get_library_path())
    except Exception as exc:  # onnxruntime raises its own types (Fail, RuntimeException) and OSError-like text
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OpenVINOUnavailableError(
            f"the OpenVINO plugin {PLUGIN_DISTRIBUTION} {plugin_version()} could not be loaded into onnxruntime "
            f"{ort.__version__}: {reason}; reinstall a matching pair: pip install --force-reinstall "
            f"'mnist-onnx[openvino]' (or use --provider cpu)"
        ) from None
    device = _registered_device()
    if device is None:
        raise OpenVINOUnavailableError(
            f"the OpenVINO plugin {plugin_version()} loaded but offers no CPU device on this machine "
            f"(use --provider cpu)"
        )
    return device


def _broken_import(exc: ImportError) -> OpenVINOUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OpenVINOUnavailableError(
        f"the OpenVINO plugin {PLUGIN_DISTRIBUTION} {plugin_version()} is installed but cannot be imported: "
        f"{reason}; reinstall it: pip install --force-reinstall 'mnist-onnx[openvino]' (or use --provider cpu)"
    )


def openvino_device() -> Any:
    """The plugin's CPU ``OrtEpDevice``, registering the plugin on first use (thread-safe, once per process).

    Returns:
        The ``onnxruntime.OrtEpDevice`` to pass to ``add_provider_for_devices``.

    Raises:
        MissingExtraError: If ``onnxruntime-ep-openvino`` is not installed (the
            message names ``pip install 'mnist-onnx[openvino]'``).
        OpenVINOUnavailableError: If the plugin cannot be loaded into this
            onnxruntime, or offers no CPU device.  The first failure is
            remembered: later calls raise it again without retrying.
    """
    global _device, _failure
    with _lock:
        if _device is None and _failure is None:
            try:
                _device = _load()
            except (MissingExtraError, OpenVINOUnavailableError) as exc:
                _failure = exc
        if _failure is not None:
            raise _failure
        return _device


def openvino_available() -> bool:
    """Whether sessions can run on OpenVINO here (installed, loads, has a CPU device); never raises."""
    if not plugin_installed() and _device is None:
        return False
    try:
        openvino_device()
    except (MissingExtraError, OpenVINOUnavailableError):
        return False
    return True


def supports_bf16() -> bool:
    """Whether OpenVINO reports bf16 compute on this CPU (its ``OPTIMIZATION_CAPABILITIES`` lists ``BF16``).

    False when the plugin is unavailable.
    """
    if not openvino_available():
        return False
    capabilities = str(openvino_device().ep_metadata.get("OPTIMIZATION_CAPABILITIES", ""))
    return "BF16" in capabilities.split()


def add_openvino(options: ort.SessionOptions, config: OpenVINOConfig | None = None) -> None:
    """Put OpenVINO (CPU device) first in ``options``; onnxruntime's CPU provider stays the fallback.

    Args:
        options: Session options, changed in place.
        config: OpenVINO properties; None is :class:`OpenVINOConfig` () (f32).

    Raises:
        MissingExtraError: If the plugin is not installed.
        OpenVINOUnavailableError: If it cannot be used here.
        MnistOnnxError: If ``config`` holds an invalid value.
    """
    config = config or OpenVINOConfig()
    provider_options = config.provider_options()  # validates before the plugin is touched
    options.add_provider_for_devices([openvino_device()], provider_options)


def create_openvino_session(
    model: bytes, options: ort.SessionOptions, config: OpenVINOConfig | None = None
) -> ort.InferenceSession:
    """A session whose nodes run on OpenVINO (CPU device), onnxruntime's CPU provider as the fallback.

    No ``providers`` argument is passed: onnxruntime would let it override the
    device chosen in ``options`` and run on the CPU provider alone.

    Raises:
        MissingExtraError, OpenVINOUnavailableError: As :func:`add_openvino`,
            or if OpenVINO did not take the session.
        Exception: onnxruntime's own error when it cannot load ``model``
            (callers turn it into a :class:`~mnist_onnx.errors.ModelError`).
    """
    add_openvino(options, config)
    session = ort.InferenceSession(model, sess_options=options, enable_fallback=0)
    if session.get_providers()[0] != OPENVINO:
        raise OpenVINOUnavailableError(
            f"OpenVINO did not take the session (it runs on {', '.join(session.get_providers())}); use --provider cpu"
        )
    return session


def padded_size(n: int, batch_size: int) -> int:
    """The batch a call of ``n`` images runs as on OpenVINO: the next power of two, at most ``batch_size``.

    OpenVINO compiles the model again for every new input shape (about 0.1-0.4 s
    each for this model, measured under load), so a stream of odd-sized calls
    (the last batch of a file, a server's requests) would compile again and
    again; padding bounds the shapes to about log2(batch_size) + 2.

    >>> [padded_size(n, 512) for n in (1, 3, 16, 17, 300, 512)]
    [1, 4, 16, 32, 512, 512]
    >>> padded_size(300, 300)
    300
    """
    if n >= batch_size:
        return n
    return min(batch_size, 1 << (n - 1).bit_length()) if n > 0 else 0


def run_padded(
    session: ort.InferenceSession, input_name: str, output_name: str, x: np.ndarray, batch_size: int
) -> np.ndarray:
    """Run ``x`` (N, ...) padded with zeros to :func:`padded_size` images; returns the output's N rows."""
    n = len(x)
    size = padded_size(n, batch_size)
    if size != n:
        pad = np.zeros((size - n, *x.shape[1:]), dtype=x.dtype)
        x = np.concatenate([x, pad])
    return np.asarray(session.run([output_name], {input_name: x})[0])[:n]


def _reset_for_tests() -> None:
    """Forget a remembered failure (tests that simulate a broken plugin)."""
    global _failure
    with _lock:
        _failure = None
