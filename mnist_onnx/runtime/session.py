"""The one place that creates onnxruntime sessions: execution providers and session options.

Everything that runs a model (the classifier, and through it the CLI) gets its
:class:`onnxruntime.InferenceSession` from :func:`create_session`, so provider
checks, thread settings and fallback reporting behave the same everywhere.
Where the model's bytes come from is :mod:`.model_source`'s job.  A new
execution provider gets its short name in :func:`resolve_providers`, its
default options beside :data:`CUDA_DEFAULT_OPTIONS` (in
:func:`_with_default_options`), and its install hint in :func:`_install_hint`.

Default session options, measured on the 2-core development machine (AMD EPYC
with AVX-512 and VNNI, 1 thread per core, onnxruntime 1.32 CPU) with the
bundled models, 1,024 real test.csv digits, 8 interleaved rounds on a quiet
machine (``python benchmarks/runtime_session_options.py MODEL.onnx --rounds 8``),
median of the rounds::

                                      fp32 (digit_cnn.onnx)   int8 (digit_cnn.int8.onnx)
    configuration                     batch 256  batch 1      batch 256  batch 1
                                      img/s      p50 ms       img/s      p50 ms
    threads=2 spin=on  (default)      5,496      0.204        15,344     0.080
    threads=2 spin=off                4,791      0.235        12,087     0.112
    threads=1 spin=on                 2,772      0.394         8,467     0.134
    threads=1 spin=off                2,823      0.390         8,378     0.138
    threads=2 spin=on, parallel mode  2,730      0.398        10,490     0.139
    threads=2 spin=on, opt=basic      3,517      0.287         3,356     2.062
    threads=2 spin=on, opt=disable    3,629      0.286         3,406     2.081

So: all graph optimizations (``ORT_ENABLE_ALL``: 1.5x for fp32 and 4.6x for
int8, whose quantized operators are only fused at that level), sequential
execution (the parallel executor, with 2 inter-op threads, only adds hand-offs
to a chain of layers), one intra-op thread per physical core (0 lets
onnxruntime count them: 2 here) and spinning on.  5,496 fp32 images/s at about
85 MFLOP an image is about 470 GFLOP/s on the two cores.  An earlier run while
other jobs loaded the machine (load average 4-6 on 2 cores) favoured
``threads=1`` in the median (2,463 against 2,174 img/s, tf2onnx's unoptimized
graph): two spinning threads fight other jobs for the cores, so pass
``threads=1`` on a machine that is busy with other work.
"""

from __future__ import annotations

import warnings

import onnxruntime as ort

from ..errors import MnistOnnxError, ModelError, ProviderError, ProviderFallbackWarning
from ._types import ModelInput, Precision, Providers, ProviderSpec
from .defaults import DEFAULT_SPINNING, DEFAULT_THREADS
from .model_source import ModelSource, describe_bad_model, first_line, load_model
from .openvino import OPENVINO, OpenVINOConfig, create_openvino_session, openvino_device

__all__ = [
    "CPU",
    "CUDA",
    "OPENVINO",
    "CUDA_DEFAULT_OPTIONS",
    "ProviderError",
    "ProviderFallbackWarning",
    "resolve_providers",
    "cuda_install_hint",
    "create_session",
    "load_model",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: CUDA provider options set unless the caller passes their own.  TF32 convolutions
#: off: measured on one H100 (bundled models, sample of 1,000 real digits,
#: ``benchmarks/gpu_check.py``), TF32 moved probabilities by up to 5.4e-4 (fp32)
#: and 4.8e-3 (int8) from the CPU's; without it, by 8.3e-7 and 2.4e-7, within
#: the exporter's 1e-5 parity limit.
CUDA_DEFAULT_OPTIONS = {"use_tf32": "0"}

_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_SHORT_NAMES: dict[str, list[ProviderSpec]] = {"cpu": [CPU], "cuda": [CUDA, CPU], "openvino": [OPENVINO, CPU]}
_SWITCH_TO_GPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'"


def provider_name(provider: ProviderSpec) -> str:
    """The name of a provider given as a name or a ``(name, options)`` pair."""
    return provider[0] if isinstance(provider, tuple) else provider


def cuda_install_hint() -> str:
    """How to get the CUDA provider, given which onnxruntime wheels are installed.

    ``onnxruntime`` and ``onnxruntime-gpu`` install the same ``onnxruntime``
    package, so with both present whichever was installed last owns the files.
    """
    from importlib import metadata

    def installed(dist: str) -> bool:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            return False
        return True

    if installed("onnxruntime-gpu") and installed("onnxruntime"):
        return (
            "onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files; "
            f"keep only the GPU wheel: {_SWITCH_TO_GPU}"
        )
    if installed("onnxruntime-gpu"):
        return (
            "onnxruntime-gpu is installed but does not offer CUDA here: check the NVIDIA driver and that the "
            "CUDA and cuDNN libraries it was built for are installed (pip install 'onnxruntime-gpu[cuda,cudnn]')"
        )
    return f"CUDA needs the onnxruntime-gpu wheel instead of onnxruntime: {_SWITCH_TO_GPU}"


def _install_hint(missing: list[str]) -> str:
    return f" ({cuda_install_hint()})" if CUDA in missing else ""


def _requested(providers: Providers, available: list[str]) -> list[ProviderSpec]:
    if not isinstance(providers, str):
        requested = list(providers)
        if not requested:
            raise ProviderError("expected at least one execution provider, got an empty list")
        return requested
    key = providers.strip().lower()
    if key == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    if key in _SHORT_NAMES:
        return list(_SHORT_NAMES[key])
    if providers.endswith("ExecutionProvider"):
        return [providers]
    raise ProviderError(
        f"expected providers 'auto', 'cpu', 'cuda', 'openvino' or a list of onnxruntime provider names, "
        f"got {providers!r}"
    )


def resolve_providers(providers: Providers = "auto") -> list[ProviderSpec]:
    """Turn a provider request into the list onnxruntime takes, checking availability.

    Args:
        providers: ``"auto"`` (CUDA when this onnxruntime build offers it, else
            the CPU; :class:`~.predictor.DigitClassifier` picks between the CPU
            provider and OpenVINO by measurement), ``"cpu"``, ``"cuda"``,
            ``"openvino"`` (the plugin of the ``openvino`` extra, registered
            here on first use), or a sequence of onnxruntime provider names or
            ``(name, options)`` pairs, in order of preference.

    Returns:
        The provider list to pass to :class:`onnxruntime.InferenceSession`; the
        CPU provider is always last, as the fallback for unsupported nodes.

    Raises:
        ProviderError: If a requested provider is not available; the message
            lists ``onnxruntime.get_available_providers()``.
        MissingExtraError: If OpenVINO is requested without its plugin installed.

    >>> resolve_providers("cpu")
    ['CPUExecutionProvider']
    """
    if (
        isinstance(providers, str)
        and providers.strip().lower() == "openvino"
        or (not isinstance(providers, str) and any(provider_name(p) == OPENVINO for p in providers))
    ):
        openvino_device()  # registers the plugin, so onnxruntime lists it; raises naming the fix
    available = ort.get_available_providers()
    requested = _requested(providers, available)
    names = []
    for item in requested:
        name = provider_name(item)
        if not isinstance(name, str):
            raise ProviderError(f"expected a provider name or a (name, options) pair, got {item!r}")
        names.append(name)
    missing = [name for name in names if name not in available]
    if missing:
        raise ProviderError(
            f"execution provider {', '.join(missing)} is not available in this onnxruntime "
            f"{ort.__version__}{_install_hint(missing)}; available: {', '.join(available)}"
        )
    if CPU not in names:
        requested.append(CPU)
    return requested


def _with_default_options(providers: list[ProviderSpec], cuda_device: int) -> list[ProviderSpec]:
    """Add the measured default options (and the device) to each provider that has them."""
    resolved: list[ProviderSpec] = []
    for provider in providers:
        if provider_name(provider) == CUDA:
            given = provider[1] if isinstance(provider, tuple) else {}
            provider = (CUDA, {"device_id": cuda_device, **CUDA_DEFAULT_OPTIONS, **given})
        resolved.append(provider)
    return resolved


def _session_options(threads: int | None, spinning: bool, optimization: str) -> ort.SessionOptions:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise MnistOnnxError(f"expected threads to be a positive integer or None, got {threads!r}")
    if optimization not in _OPTIMIZATION_LEVELS:
        raise MnistOnnxError(f"expected optimization one of {', '.join(_OPTIMIZATION_LEVELS)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[optimization]
    # A chain of convolutions has no parallel branches: the parallel executor only adds overhead.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads if threads is not None else DEFAULT_THREADS
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # onnxruntime logs CUDA node-placement notices as warnings on every session; keep errors only.
    # Fallbacks are reported by create_session itself.
    options.log_severity_level = 3
    return options


def create_session(
    model: ModelInput | ModelSource = None,
    *,
    providers: Providers = "auto",
    threads: int | None = None,
    spinning: bool | None = None,
    optimization: str = "all",
    precision: Precision | None = None,
    cuda_device: int = 0,
    openvino: OpenVINOConfig | None = None,
) -> ort.InferenceSession:
    """Create an onnxruntime session with the package's checked defaults.

    Args:
        model: A :class:`~.model_source.ModelSource`, or anything
            :func:`~.model_source.load_model` takes (None is the bundled model of ``precision``).
        providers: See :func:`resolve_providers`.
        threads: Intra-op threads; None uses :data:`~.defaults.DEFAULT_THREADS`.
        spinning: Whether idle worker threads spin; None uses :data:`~.defaults.DEFAULT_SPINNING`.
            Spinning lowers latency but burns CPU between calls.
        optimization: Graph optimization level: ``disable``, ``basic``,
            ``extended`` or ``all``.
        precision: Which bundled model when ``model`` is None (None: fp32).
        cuda_device: The GPU to use with the CUDA provider.
        openvino: OpenVINO's properties when ``providers`` names it (None: f32
            inference precision, for parity with the CPU provider).

    Returns:
        The session. Its ``get_providers()`` are the providers really in use.

    Raises:
        ProviderError: If a requested provider is not available (OpenVINO:
            :class:`~.openvino.OpenVINOUnavailableError`, naming the fix), or
            OpenVINO is given options in a ``(name, options)`` pair (they would be dropped).
        MissingExtraError: If OpenVINO is requested without the ``openvino`` extra.
        ModelError: If the model cannot be read or onnxruntime rejects it; the
            message says whether the file is empty, truncated or not ONNX.

    Warns:
        ProviderFallbackWarning: If CUDA was requested but the session runs on
            the CPU (for example the CUDA libraries could not be loaded).
    """
    source = load_model(model, precision=precision)
    resolved = _with_default_options(resolve_providers(providers), cuda_device)
    wants_cuda = any(provider_name(p) == CUDA for p in resolved)
    options = _session_options(threads, DEFAULT_SPINNING if spinning is None else spinning, optimization)
    if any(provider_name(p) == OPENVINO for p in resolved):
        _refuse_openvino_options(resolved)
        return _openvino_session(source, options, openvino)
    fallback_reason = None
    try:
        # enable_fallback=0: onnxruntime's own fallback prints to stdout; we warn instead.
        session = ort.InferenceSession(source.data, sess_options=options, providers=resolved, enable_fallback=0)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, ...)
        if not (wants_cuda and _is_provider_failure(exc)):
            raise ModelError(describe_bad_model(source, exc)) from None
        fallback_reason = first_line(exc)
        cpu_only = [p for p in resolved if provider_name(p) != CUDA]
        try:
            session = ort.InferenceSession(source.data, sess_options=options, providers=cpu_only, enable_fallback=0)
        except Exception as cpu_exc:
            raise ModelError(describe_bad_model(source, cpu_exc)) from None
    if wants_cuda and CUDA not in session.get_providers():
        _warn_cuda_fallback(source, session, fallback_reason)
    return session


def _refuse_openvino_options(providers: list[ProviderSpec]) -> None:
    """OpenVINO runs as a plugin configured by :class:`~.openvino.OpenVINOConfig`: options in a
    ``(name, options)`` pair would be dropped, so they are refused rather than ignored."""
    for provider in providers:
        if isinstance(provider, tuple) and provider_name(provider) == OPENVINO and provider[1]:
            raise ProviderError(
                f"options for {OPENVINO} in providers are not used (it runs as a plugin, with f32 inference "
                f"precision for parity with the CPU provider), got {provider[1]!r}: pass providers='openvino', "
                f"and precision='bf16' for bf16 compute"
            )


def _openvino_session(
    source: ModelSource, options: ort.SessionOptions, config: OpenVINOConfig | None
) -> ort.InferenceSession:
    try:
        return create_openvino_session(source.data, options, config)
    except (ProviderError, MnistOnnxError):
        raise
    except Exception as exc:  # onnxruntime's own exception types
        raise ModelError(describe_bad_model(source, exc)) from None


def _warn_cuda_fallback(source: ModelSource, session: ort.InferenceSession, reason: str | None) -> None:
    reason = reason or "onnxruntime did not register the CUDA provider"
    warnings.warn(
        f"CUDA was requested but {source.name} runs on {', '.join(session.get_providers())}: {reason}. "
        f"Check that a GPU is visible and that the CUDA and cuDNN libraries onnxruntime-gpu "
        f"{ort.__version__} was built for are installed (pip install 'onnxruntime-gpu[cuda,cudnn]').",
        ProviderFallbackWarning,
        stacklevel=3,
    )


def _is_provider_failure(exc: Exception) -> bool:
    text = str(exc)
    return any(word in text for word in ("CUDA", "cuda", "cudnn", "cuDNN", "cublas", "provider", "Provider"))
