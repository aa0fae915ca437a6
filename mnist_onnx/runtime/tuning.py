"""Measured choices, cached per machine: the fastest provider for a model and batch size.

``providers="auto"`` picks between onnxruntime's CPU provider and OpenVINO by
a short trial the first time a (CPU, library versions, model sha256, batch
size) is seen: both run the same real digits, interleaved, and OpenVINO is
taken only when it is at least :data:`MIN_SPEEDUP` times as fast, so ``auto``
is never slower than the CPU provider alone by more than the trial's noise.
When OpenVINO wins, smaller calls (down to one image) are measured too, and
the :func:`crossover` below which the CPU provider stays faster is kept: calls below it run on the CPU provider.
The answer is cached as JSON in the user's cache directory (:func:`cache_dir`); ``mnist-onnx tune`` measures again.
The bf16 gate (:mod:`mnist_onnx.runtime.bf16_gate`) keeps its verdicts in the same cache.

Everything here takes plain callables (uint8 images in, probabilities out), so
it measures exactly the path the classifier will run and imports nothing of it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import CacheWarning, MnistOnnxError

__all__ = [
    "CACHE_ENV",
    "MIN_SPEEDUP",
    "Predict",
    "cache_dir",
    "machine_id",
    "TrialKey",
    "TuneCache",
    "ProviderChoice",
    "crossover",
    "choice_from_entry",
    "measure",
    "choose_provider",
    "utc_now",
]

#: Environment variable naming the cache directory (overrides ``$XDG_CACHE_HOME/mnist-onnx``).
CACHE_ENV = "MNIST_ONNX_CACHE_DIR"
_CACHE_FILE = "measured-choices.json"
_FORMAT = 1
#: OpenVINO must be this much faster than the CPU provider in the trial to be chosen: an identical CPU control read
#: 0.83-1.34x on a loaded 2-core machine, OpenVINO's real wins are 2x and more (benchmarks/openvino.md).
MIN_SPEEDUP = 1.25

#: uint8 images (N, 28, 28) -> probabilities (N, 10) float32.
Predict = Callable[[np.ndarray], np.ndarray]


def cache_dir() -> Path:
    """Where measured choices are kept: ``$MNIST_ONNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/mnist-onnx``,
    else ``~/.cache/mnist-onnx``."""
    if override := os.environ.get(CACHE_ENV):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnist-onnx"


_INT8_BF16_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def machine_id() -> str:
    """The CPU model, its int8/bf16 features and usable physical cores, e.g.
    ``Intel(R) Xeon(R) Processor; amx_bf16 amx_int8 ...; 2 cores``."""
    from .defaults import physical_cores

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    features = " ".join(sorted(f for f in _INT8_BF16_FLAGS if f in flags)) or "no listed int8/bf16 features"
    return f"{name}; {features}; {physical_cores()} cores"


def _library_versions() -> dict[str, str]:
    import onnxruntime as ort

    from .openvino import plugin_version

    return {
        "mnist-onnx": __version__,
        "onnxruntime": ort.__version__,
        "onnxruntime-ep-openvino": plugin_version() or "not installed",
    }


@dataclass(frozen=True)
class TrialKey:
    """What a measured choice depends on.

    Attributes:
        purpose: ``"provider"`` (the fastest provider) or ``"bf16-gate"``.
        model_sha256: sha256 of the serialized model.
        batch_size: Images per call (0 where it does not matter).
        machine: :func:`machine_id`.
        versions: mnist-onnx, onnxruntime and plugin versions.
        extra: Anything else the answer depends on (thresholds, thread count).
    """

    purpose: str
    model_sha256: str
    batch_size: int = 0
    machine: str = field(default_factory=machine_id)
    versions: tuple[tuple[str, str], ...] = field(default_factory=lambda: tuple(sorted(_library_versions().items())))
    extra: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """The key as one stable string (the cache file's dictionary key)."""
        return json.dumps(asdict(self), sort_keys=True)


class TuneCache:
    """A JSON file of measured choices, safe to share between threads and processes.

    Reads tolerate a missing or damaged file (it counts as empty); writes go to
    a temporary file in the same directory, then replace the old one, so a
    reader never sees half a file.  Each write re-reads the file first, so
    entries written meanwhile by another process are kept.

    Args:
        directory: The cache directory; None is :func:`cache_dir` at call time.
    """

    _locks: dict[Path, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self._directory = Path(directory) if directory is not None else None

    @property
    def path(self) -> Path:
        """The JSON file."""
        return (self._directory if self._directory is not None else cache_dir()) / _CACHE_FILE

    def _lock(self) -> threading.Lock:
        with TuneCache._locks_guard:
            return TuneCache._locks.setdefault(self.path.resolve(), threading.Lock())

    def _read(self) -> dict[str, Any]:
        path = self.path
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # nothing cached yet (writing will say what is wrong)
            return {}
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            return self._damaged(f"cannot be read: {getattr(exc, 'strerror', None) or exc}")
        try:
            data = json.loads(text)
        except ValueError as exc:
            return self._damaged(f"is not valid JSON ({exc})")
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            return self._damaged("is not a cache of measured choices")
        if data.get("format") != _FORMAT:
            return self._damaged(f"has format {data.get('format')!r}, this version reads {_FORMAT}")
        return data["entries"]

    def _damaged(self, why: str) -> dict[str, Any]:
        warnings.warn(
            f"{self.path} {why}: it counts as empty, and the next choice measured replaces it",
            CacheWarning,
            stacklevel=4,
        )
        return {}

    def get(self, key: TrialKey) -> dict[str, Any] | None:
        """The entry stored under ``key``, or None."""
        with self._lock():
            entry = self._read().get(key.text())
        return entry if isinstance(entry, dict) else None

    def _write(self, entries: dict[str, Any]) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"format": _FORMAT, "entries": entries}, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, key: TrialKey, entry: dict[str, Any]) -> bool:
        """Store ``entry`` under ``key`` (atomically); returns whether it was written.

        A cache that cannot be written is skipped with a :class:`~mnist_onnx.errors.CacheWarning`: the
        choice is then measured again next time, which costs time but never correctness.
        """
        with self._lock():
            entries = self._read()
            entries[key.text()] = entry
            try:
                self._write(entries)
            except OSError as exc:
                warnings.warn(
                    f"cannot save the measured choice in {self.path} ({exc.strerror or exc}); it will be measured "
                    f"again next time: set {CACHE_ENV} to a writable directory",
                    CacheWarning,
                    stacklevel=2,
                )
                return False
        return True

    def clear(self, purpose: str | None = None) -> int:
        """Forget entries (all, or those of one ``purpose``); returns how many were removed.

        Raises:
            MnistOnnxError: If the file cannot be rewritten (a read-only cache directory).
        """
        with self._lock():
            entries = self._read()
            removed = [k for k in entries if purpose is None or json.loads(k).get("purpose") == purpose]
            if removed:
                try:
                    self._write({k: v for k, v in entries.items() if k not in removed})
                except OSError as exc:
                    raise MnistOnnxError(
                        f"cannot forget the cached choices in {self.path} ({exc.strerror or exc}): delete the file, "
                        f"or set {CACHE_ENV} to a writable directory"
                    ) from None
        return len(removed)


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second (when a choice was measured)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def measure(
    candidates: Mapping[str, Predict],
    images: np.ndarray,
    batch_size: int,
    *,
    rounds: int = 3,
    block_seconds: float = 0.05,
) -> dict[str, float]:
    """Images per second of each candidate at ``batch_size``, interleaved, median of ``rounds``.

    Each round runs every candidate once (in turn, the order rotating), for
    at least ``block_seconds`` and at least two calls, after one untimed call.

    Args:
        candidates: name -> predict function.
        images: uint8 digits (N, 28, 28); batches cycle through them.
        batch_size: Images per call.
        rounds: Rounds; the median round counts.
        block_seconds: Shortest timed block per candidate and round.

    Returns:
        name -> images per second.
    """
    if batch_size < 1 or len(images) == 0:
        raise MnistOnnxError(f"expected a positive batch size and some images, got {batch_size} and {len(images)}")
    if len(images) >= batch_size:
        batches = [images[i : i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)]
    else:
        batches = [np.resize(images, (batch_size, *images.shape[1:]))]
    names = list(candidates)
    for name in names:
        candidates[name](batches[0])  # warm-up: OpenVINO compiles for a new shape on its first call
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            predict = candidates[name]
            predict(batches[-1])
            speeds[name].append(images_per_second(predict, batches, seconds=block_seconds))
    return {name: float(np.median(v)) for name, v in speeds.items()}


def images_per_second(
    predict: Callable[[np.ndarray], Any], batches: Sequence[np.ndarray], *, seconds: float, min_calls: int = 2
) -> float:
    """Images per second of ``predict`` called on ``batches`` in turn, for at least ``seconds`` and ``min_calls`` calls.

    Only the calls are timed: warm ``predict`` up before (OpenVINO compiles on a new shape's first call).
    """
    done, calls, started = 0, 0, time.perf_counter()
    while True:
        batch = batches[calls % len(batches)]
        predict(batch)
        done += len(batch)
        calls += 1
        elapsed = time.perf_counter() - started
        if calls >= min_calls and elapsed >= seconds:
            return done / elapsed


@dataclass(frozen=True)
class ProviderChoice:
    """The outcome of a provider trial.

    Attributes:
        provider: ``"cpu"`` or ``"openvino"``: what runs calls of ``cpu_below`` images or more.
        images_per_second: Trial figure of each candidate at the largest trial size.
        measured_at: When the trial ran (UTC, ISO 8601).
        from_cache: True when this came from the cache, False when just measured.
        cpu_below: Calls with fewer images run on the CPU provider even when
            ``provider`` is ``"openvino"`` (0: none); see :func:`crossover`.
        by_size: Images per call -> each candidate's figure at that size.
    """

    provider: str
    images_per_second: dict[str, float]
    measured_at: str
    from_cache: bool
    cpu_below: int = 0
    by_size: dict[int, dict[str, float]] = field(default_factory=dict)

    def runs_on_cpu(self, images: int) -> bool:
        """Whether a call of ``images`` images belongs on the CPU provider."""
        return self.provider != "openvino" or images < self.cpu_below


def crossover(by_size: Mapping[int, Mapping[str, float]], min_speedup: float = MIN_SPEEDUP) -> int | None:
    """The smallest trial size from which OpenVINO beats the CPU provider by ``min_speedup`` at every larger one.

    ``by_size``: images per call -> ``{"cpu": images/s, "openvino": images/s}``.  Returns that size (calls
    below it run on the CPU provider; 0 when OpenVINO wins at every size), or None when it loses at the largest.

    >>> crossover({1: {"cpu": 5, "openvino": 4}, 16: {"cpu": 5, "openvino": 9}, 256: {"cpu": 5, "openvino": 9}})
    16
    """
    sizes = sorted(by_size, reverse=True)
    below: int | None = None
    for size in sizes:
        speeds = by_size[size]
        if speeds.get("openvino", 0.0) < min_speedup * speeds.get("cpu", 0.0):
            break
        below = size
    if below is None:
        return None
    return 0 if below == sizes[-1] else below


def choice_from_entry(entry: Mapping[str, Any] | None, offered: Sequence[str]) -> ProviderChoice | None:
    """A cached provider choice, or None when it must be measured again: its provider is not ``offered``, it
    holds no crossover (``cpu_below``, a non-negative integer: a one-size trial wrote it) or it is damaged."""
    if entry is None or entry.get("provider") not in offered:
        return None
    below = entry.get("cpu_below")
    if not isinstance(below, int) or isinstance(below, bool) or below < 0:
        return None
    try:
        by_size = {
            int(size): {str(k): float(v) for k, v in speeds.items()}
            for size, speeds in dict(entry.get("by_size", {})).items()
        }
        speeds = {str(k): float(v) for k, v in dict(entry.get("images_per_second", {})).items()}
    except (TypeError, ValueError, AttributeError):
        return None
    return ProviderChoice(str(entry["provider"]), speeds, str(entry.get("measured_at", "")), True, below, by_size)


def choose_provider(
    key: TrialKey,
    candidates: Mapping[str, Callable[[], Predict]],
    images: np.ndarray,
    *,
    cache: TuneCache | None = None,
    remeasure: bool = False,
    min_speedup: float = MIN_SPEEDUP,
    chunk: int | None = None,
    sizes: Sequence[int] = (),
) -> ProviderChoice:
    """The fastest of ``candidates`` for ``key``, from the cache or by a trial, with its :func:`crossover`.

    When a candidate other than ``cpu`` wins the main trial, the smaller ``sizes`` are measured too, largest
    first, until the CPU provider wins one.

    Args:
        key: What the answer depends on (its ``batch_size`` is the classifier's).
        candidates: name -> factory of a predict function; must include ``"cpu"``,
            the default any other must beat by ``min_speedup``.  Factories are
            only called when a trial runs.
        images: Real uint8 digits (N, 28, 28) for the trial.
        cache: Where answers are kept; None is :class:`TuneCache` ().
        remeasure: Ignore a cached answer and measure again.
        min_speedup: How much faster than ``cpu`` another candidate must be.
        chunk: Images per predict call in the main trial (None: ``key.batch_size``).
        sizes: Smaller images-per-call sizes to measure for the crossover.

    Returns:
        The :class:`ProviderChoice`.
    """
    if "cpu" not in candidates:
        raise MnistOnnxError(f"expected a 'cpu' candidate, got {', '.join(candidates)}")
    cache = cache if cache is not None else TuneCache()
    cached = None if remeasure else choice_from_entry(cache.get(key), list(candidates))
    if cached is not None:
        return cached
    if len(candidates) == 1:
        return ProviderChoice("cpu", {}, utc_now(), False)
    main = chunk or key.batch_size
    predicts = {name: make() for name, make in candidates.items()}
    by_size = {main: measure(predicts, images, main)}
    speeds = by_size[main]
    best = max(speeds, key=lambda name: speeds[name])
    provider = best if best == "cpu" or speeds[best] >= min_speedup * speeds["cpu"] else "cpu"
    if provider != "cpu":
        for size in sorted((s for s in set(sizes) if 0 < s < main), reverse=True):
            by_size[size] = measure({"cpu": predicts["cpu"], provider: predicts[provider]}, images, size)
            if by_size[size][provider] < min_speedup * by_size[size]["cpu"]:
                break
    cpu_below = (
        crossover({s: {"cpu": v["cpu"], "openvino": v.get(provider, 0.0)} for s, v in by_size.items()}, min_speedup)
        or 0
    )
    entry = {
        "provider": provider,
        "images_per_second": speeds,
        "measured_at": utc_now(),
        "min_speedup": min_speedup,
        "trial_images": int(len(images)),
        "cpu_below": cpu_below,
        "by_size": {str(s): v for s, v in sorted(by_size.items())},
        "key": asdict(key),
    }
    cache.put(key, entry)
    return ProviderChoice(provider, speeds, str(entry["measured_at"]), False, cpu_below, by_size)
