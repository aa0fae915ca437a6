"""The one place that creates onnxruntime sessions.

Everything that runs a model (the classifier, and through it the CLI) gets its
:class:`onnxruntime.InferenceSession` from :func:`create_session`, so provider
checks, thread settings and fallback reporting behave the same everywhere.

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

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import onnxruntime as ort

from ..errors import ModelError, MnistOnnxError
from .defaults import DEFAULT_SPINNING, DEFAULT_THREADS

__all__ = [
    "ProviderError",
    "ProviderFallbackWarning",
    "ModelSource",
    "Providers",
    "Precision",
    "PRECISIONS",
    "resolve_providers",
    "load_model",
    "create_session",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: ``"auto"``, ``"cpu"``, ``"cuda"``, or onnxruntime provider names (optionally
#: ``(name, options)`` pairs) in order of preference.
Providers = Union[str, Sequence[Union[str, tuple[str, dict[str, Any]]]]]
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")

_BUNDLED_CARD = "model_card.json"
_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderError(MnistOnnxError):
    """A requested execution provider is unknown or not available in this onnxruntime build."""


class ProviderFallbackWarning(RuntimeWarning):
    """CUDA was requested but the session runs on the CPU (onnxruntime falls back silently)."""


@dataclass(frozen=True)
class ModelSource:
    """The bytes of a model and where they came from.

    Attributes:
        data: The serialized ONNX model.
        name: A human-readable origin for messages (a path, ``<bytes>``, or
            ``bundled fp32 model digit_cnn.onnx``).
        bundled_precision: ``"fp32"``/``"int8"`` for a bundled model, else None.
    """

    data: bytes
    name: str
    bundled_precision: str | None = None


_SWITCH_TO_GPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'"


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
        return ("onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files; "
                f"keep only the GPU wheel: {_SWITCH_TO_GPU}")
    if installed("onnxruntime-gpu"):
        return ("onnxruntime-gpu is installed but does not offer CUDA here: check the NVIDIA driver and that the "
                "CUDA and cuDNN libraries it was built for are installed (pip install 'onnxruntime-gpu[cuda,cudnn]')")
    return f"CUDA needs the onnxruntime-gpu wheel instead of onnxruntime: {_SWITCH_TO_GPU}"


def resolve_providers(providers: Providers = "auto") -> list[str | tuple[str, dict[str, Any]]]:
    """Turn a provider request into the list onnxruntime takes, checking availability.

    Args:
        providers: ``"auto"`` (CUDA when this onnxruntime build offers it, else
            the CPU), ``"cpu"``, ``"cuda"``, or a sequence of onnxruntime
            provider names or ``(name, options)`` pairs, in order of preference.

    Returns:
        The provider list to pass to :class:`onnxruntime.InferenceSession`; the
        CPU provider is always last, as the fallback for unsupported nodes.

    Raises:
        ProviderError: If a requested provider is not available; the message
            lists ``onnxruntime.get_available_providers()``.

    >>> resolve_providers("cpu")
    ['CPUExecutionProvider']
    """
    available = ort.get_available_providers()
    if isinstance(providers, str):
        key = providers.strip().lower()
        if key == "auto":
            return [CUDA, CPU] if CUDA in available else [CPU]
        if key == "cpu":
            requested: list[Any] = [CPU]
        elif key == "cuda":
            requested = [CUDA, CPU]
        elif providers.endswith("ExecutionProvider"):
            requested = [providers]
        else:
            raise ProviderError(
                f"expected providers 'auto', 'cpu', 'cuda' or a list of onnxruntime provider names, "
                f"got {providers!r}"
            )
    else:
        requested = list(providers)
        if not requested:
            raise ProviderError("expected at least one execution provider, got an empty list")
    names = []
    for item in requested:
        name = item[0] if isinstance(item, tuple) else item
        if not isinstance(name, str):
            raise ProviderError(f"expected a provider name or a (name, options) pair, got {item!r}")
        names.append(name)
    missing = [name for name in names if name not in available]
    if missing:
        hint = ""
        if CUDA in missing:
            hint = f" ({cuda_install_hint()})"
        raise ProviderError(
            f"execution provider {', '.join(missing)} is not available in this onnxruntime "
            f"{ort.__version__}{hint}; available: {', '.join(available)}"
        )
    if CPU not in names:
        requested.append(CPU)
    return requested


def _bundled_dir() -> Path:
    return Path(str(resources.files("mnist_onnx.runtime").joinpath("bundled")))


def _bundled_model(precision: str) -> ModelSource:
    if precision not in PRECISIONS:
        raise ModelError(f"expected precision 'fp32' or 'int8', got {precision!r}")
    folder = _bundled_dir()
    card_path = folder / _BUNDLED_CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"this installation has no bundled model ({card_path} is missing); "
            f"pass a model file instead (model=PATH, or --model PATH)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_path}: cannot read the bundled model card ({exc})") from None
    files = card.get("files") if isinstance(card, dict) else None
    entry = files.get(precision) if isinstance(files, dict) else None
    if entry is None:
        raise ModelError(f"{card_path}: the model card has no files.{precision} entry: this installation "
                         f"ships no {precision} model")
    if not isinstance(entry, dict) or not {"path", "sha256"} <= entry.keys():
        raise ModelError(f"{card_path}: expected files.{precision}.path and .sha256, "
                         f"got {json.dumps(entry)[:200]}")
    path = folder / entry["path"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"bundled {precision} model {path}: cannot read ({exc.strerror or exc}); "
                         f"reinstall mnist-onnx or pass model=PATH") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ModelError(
            f"bundled {precision} model {path}: expected sha256 {entry['sha256']} (model card), "
            f"got {digest}; the installation is damaged, reinstall mnist-onnx"
        )
    return ModelSource(data, f"bundled {precision} model {entry['path']}", precision)


def load_model(model: str | os.PathLike[str] | bytes | Any | None = None, *,
               precision: str = "fp32") -> ModelSource:
    """Read a model from a path, bytes, an ``onnx.ModelProto``, or the bundled default.

    Args:
        model: None for the bundled model of ``precision``; a path to a
            ``.onnx`` file; the serialized bytes; or any object with
            ``SerializeToString()`` (an ``onnx.ModelProto``; onnx itself is not
            imported here).
        precision: Which bundled model, ``"fp32"`` or ``"int8"``, when ``model`` is None.

    Returns:
        A :class:`ModelSource`. A bundled model's sha256 has been checked
        against the model card.

    Raises:
        ModelError: If the file is missing, unreadable or empty, or a bundled
            model is missing or does not match its recorded sha256.
    """
    if model is None:
        return _bundled_model(precision)
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, name = bytes(model), f"<{len(model):,} bytes>"
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        name = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{name}: no such model file") from None
        except IsADirectoryError:
            hint = " (a SavedModel folder? export it to ONNX first)" if (path / "saved_model.pb").exists() else ""
            raise ModelError(f"{name}: is a directory, expected an .onnx file{hint}") from None
        except OSError as exc:
            raise ModelError(f"{name}: cannot read the model ({exc.strerror or exc})") from None
    elif hasattr(model, "SerializeToString"):
        data, name = model.SerializeToString(), f"<{type(model).__name__}>"
    else:
        raise ModelError(f"expected a model path, bytes or None (the bundled model), got {type(model).__name__}")
    if not data:
        raise ModelError(f"{name}: is empty (0 bytes), expected an ONNX model")
    return ModelSource(data, name)


def _protobuf_problem(data: bytes) -> str | None:
    """Say why ``data`` cannot be a protobuf message, or None if its top level parses.

    Only the top level is walked (tag, wire type, length), which is enough to
    tell a truncated ONNX file (a length that runs past the end) from a file
    that is not protobuf at all, without importing onnx.
    """
    pos, end = 0, len(data)

    def varint() -> int | None:
        nonlocal pos
        value, shift = 0, 0
        while pos < end:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                return None
        return None

    while pos < end:
        start = pos
        tag = varint()
        if tag is None:
            return f"ends inside a field header at byte {start:,}"
        field, wire = tag >> 3, tag & 7
        if field == 0 or wire in (3, 4, 6, 7):
            return f"not protobuf data (invalid field tag at byte {start:,})"
        if wire == 0:
            if varint() is None:
                return f"ends inside a value at byte {start:,}"
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:  # wire == 2, length-delimited
            length = varint()
            if length is None:
                return f"ends inside a length at byte {start:,}"
            pos += length
        if pos > end:
            return f"field {field} at byte {start:,} runs {pos - end:,} bytes past the end of the data"
    return None


def _describe_bad_model(source: ModelSource, error: Exception) -> str:
    data = source.data
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if data[:4] == b"PK\x03\x04":
        return (f"{source.name}: is a zip archive (a .keras model?), expected an ONNX model; "
                f"convert it with 'mnist-onnx export'")
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return f"{source.name}: is an HDF5 file (a Keras .h5 model?), expected an ONNX model"
    head = data[:256]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"{source.name}: is a text file, expected a binary ONNX model (first line: {head.splitlines()[0][:60]!r})"
    problem = _protobuf_problem(data)
    if problem and ("past the end" in problem or problem.startswith("ends inside")):
        return (f"{source.name}: truncated ONNX model ({len(data):,} bytes; {problem}); "
                f"copy or export it again")
    if problem:
        return f"{source.name}: is not an ONNX model ({problem})"
    return f"{source.name}: onnxruntime cannot load this model: {first_line}"


#: CUDA provider options set unless the caller passes their own.  TF32 convolutions
#: off: measured on one H100 (bundled models, sample of 1,000 real digits,
#: ``benchmarks/gpu_check.py``), TF32 moved probabilities by up to 5.4e-4 (fp32)
#: and 4.8e-3 (int8) from the CPU's; without it, by 8.3e-7 and 2.4e-7, within
#: the exporter's 1e-5 parity limit.
CUDA_DEFAULT_OPTIONS = {"use_tf32": "0"}


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
    model: str | os.PathLike[str] | bytes | ModelSource | Any | None = None,
    *,
    providers: Providers = "auto",
    threads: int | None = None,
    spinning: bool | None = None,
    optimization: str = "all",
    precision: str = "fp32",
    cuda_device: int = 0,
) -> ort.InferenceSession:
    """Create an onnxruntime session with the package's checked defaults.

    Args:
        model: A :class:`ModelSource`, or anything :func:`load_model` takes
            (None is the bundled model of ``precision``).
        providers: See :func:`resolve_providers`.
        threads: Intra-op threads; None uses :data:`DEFAULT_THREADS`.
        spinning: Whether idle worker threads spin; None uses :data:`DEFAULT_SPINNING`.
            Spinning lowers latency but burns CPU between calls.
        optimization: Graph optimization level: ``disable``, ``basic``,
            ``extended`` or ``all``.
        precision: Which bundled model when ``model`` is None.
        cuda_device: The GPU to use with the CUDA provider.

    Returns:
        The session. Its ``get_providers()`` are the providers really in use.

    Raises:
        ProviderError: If a requested provider is not available.
        ModelError: If the model cannot be read or onnxruntime rejects it; the
            message says whether the file is empty, truncated or not ONNX.

    Warns:
        ProviderFallbackWarning: If CUDA was requested but the session runs on
            the CPU (for example the CUDA libraries could not be loaded).
    """
    source = model if isinstance(model, ModelSource) else load_model(model, precision=precision)
    resolved = resolve_providers(providers)
    resolved = [
        (CUDA, {"device_id": cuda_device, **CUDA_DEFAULT_OPTIONS, **(p[1] if isinstance(p, tuple) else {})})
        if (p[0] if isinstance(p, tuple) else p) == CUDA else p
        for p in resolved
    ]
    wants_cuda = any((p[0] if isinstance(p, tuple) else p) == CUDA for p in resolved)
    options = _session_options(threads, DEFAULT_SPINNING if spinning is None else spinning, optimization)
    fallback_reason = None
    try:
        # enable_fallback=0: onnxruntime's own fallback prints to stdout; we warn instead.
        session = ort.InferenceSession(source.data, sess_options=options, providers=resolved, enable_fallback=0)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, ...)
        if wants_cuda and _is_provider_failure(exc):
            fallback_reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            cpu_only = [p for p in resolved if (p[0] if isinstance(p, tuple) else p) != CUDA]
            try:
                session = ort.InferenceSession(source.data, sess_options=options, providers=cpu_only,
                                               enable_fallback=0)
            except Exception as cpu_exc:
                raise ModelError(_describe_bad_model(source, cpu_exc)) from None
        else:
            raise ModelError(_describe_bad_model(source, exc)) from None
    if wants_cuda and CUDA not in session.get_providers():
        reason = fallback_reason or "onnxruntime did not register the CUDA provider"
        warnings.warn(
            f"CUDA was requested but {source.name} runs on {', '.join(session.get_providers())}: {reason}. "
            f"Check that a GPU is visible and that the CUDA and cuDNN libraries onnxruntime-gpu "
            f"{ort.__version__} was built for are installed (pip install 'onnxruntime-gpu[cuda,cudnn]').",
            ProviderFallbackWarning,
            stacklevel=2,
        )
    return session


def _is_provider_failure(exc: Exception) -> bool:
    text = str(exc)
    return any(word in text for word in ("CUDA", "cuda", "cudnn", "cuDNN", "cublas", "provider", "Provider"))
