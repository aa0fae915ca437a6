"""Loading the served model and deciding when the server is ready.

Ready means: the model file's sha256 was checked (against the model card for a
bundled model, against ``--sha256`` when given), a warm-up ran at batch sizes 1
and ``max_batch_size``, and the bundled labelled sample (1,000 held-out MNIST
digits) was predicted with at least the expected accuracy.  Until then the
inference endpoints answer 503 and ``/v2/health/ready`` says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import ContractWarning, ModelError
from .batcher import Batcher, BatchStats
from .config import DEFAULT_MIN_SAMPLE_ACCURACY, INLINE_BUDGET_MS, ServeConfig

__all__ = ["ServedModel", "SAMPLE", "MODEL_CARD", "log_contract_warnings_only"]

_BUNDLED = Path(__file__).resolve().parent.parent / "runtime" / "bundled"
SAMPLE = _BUNDLED / "sample.csv.gz"
MODEL_CARD = _BUNDLED / "model_card.json"
_log = logging.getLogger("mnist_onnx.serve")


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _card() -> dict[str, Any]:
    with open(MODEL_CARD, encoding="utf-8") as handle:
        card: dict[str, Any] = json.load(handle)
    return card


def log_contract_warnings_only() -> None:
    """Silence Python's own print of :class:`ContractWarning` in a server process.

    The loader logs each one as a single line (and names it again when the model
    is not ready); Python's print would add the caller's file path and source line.
    """
    warnings.filterwarnings("ignore", category=ContractWarning)


def check_model_file(config: ServeConfig) -> str:
    """The model's sha256, checked against ``config.sha256`` or the model card.

    Raises:
        ModelError: If the file cannot be read, is plainly not an ONNX model (text, zip,
            HDF5, truncated), or its sha256 differs from the expected one.
    """
    if config.model is None:
        entry = _card()["files"][config.precision or "fp32"]
        path, expected = str(_BUNDLED / entry["path"]), config.sha256 or entry["sha256"]
    else:
        path, expected = config.model, config.sha256
    digest = _file_sha256(path)
    if expected is not None and digest != expected.lower():
        raise ModelError(f"{path}: expected sha256 {expected}, got {digest}")
    if config.model is not None:  # a file that cannot be ONNX fails now, not as a server that is never ready
        from ..runtime.model_source import not_onnx_reason

        with open(path, "rb") as handle:
            reason = not_onnx_reason(path, handle.read())
        if reason is not None:
            raise ModelError(reason)
    return digest


class ServedModel:
    """The classifier, its batcher, and the readiness state, loaded on a background thread.

    Args:
        config: The server's settings.
        stats: The batcher's metric callbacks.
        classifier_factory: Builds the classifier (default: ``DigitClassifier``
            from ``config``); tests pass a deliberately slow one.
    """

    def __init__(
        self, config: ServeConfig, stats: BatchStats, classifier_factory: Callable[[ServeConfig], Any] | None = None
    ) -> None:
        self.config = config
        self.stats = stats
        self._factory = classifier_factory or _digit_classifier
        self.classifier: Any = None
        self.batcher: Batcher | None = None
        self.sha256: str | None = None
        self.sample_accuracy: float | None = None
        self.inline_max_images = 0
        self.images_per_second: float | None = None
        self.labels: np.ndarray = np.arange(10, dtype=np.int64)
        self.state = "loading"  # loading -> ready | failed
        self.problem = "the model is loading"
        self.loaded = threading.Event()
        self._thread = threading.Thread(target=self._load, name="mnist-onnx-model-loader", daemon=True)

    def start(self) -> None:
        """Begin loading on a background thread (liveness answers meanwhile)."""
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Whether inference requests are taken."""
        return self.state == "ready"

    def close(self) -> None:
        """Finish queued work and stop the batcher (waits for the loader first)."""
        if self._thread.is_alive():
            self._thread.join()
        if self.batcher is not None:
            self.batcher.close()

    def _load(self) -> None:
        started = time.monotonic()
        hints: list[str] = []
        try:
            self.sha256 = check_model_file(self.config)
            self.classifier = self._factory(self.config)
            hints = [str(hint) for hint in getattr(self.classifier, "warnings", [])]
            for hint in hints:  # the input-contract check's advice: logged, and named again if not ready
                _log.warning("mnist-onnx serve: warning: %s", hint)
            self.labels = _int_labels(self.classifier.class_labels)
            self._warm_up()
            self.sample_accuracy = self._check_sample()
            self.inline_max_images = self._inline_limit()
            self.batcher = Batcher(
                self.classifier.predict_proba,
                max_batch_size=self.config.max_batch_size,
                max_queue_delay_s=self.config.max_queue_delay_ms / 1000.0,
                max_queue=self.config.max_queue,
                inline_max_images=self.inline_max_images,
                images_per_second=self.images_per_second,
                stats=self.stats,
            )
        except Exception as exc:  # reported by /v2/health/ready and the log; the process stays live
            self.problem = f"the model failed its start-up checks: {exc}"
            if hints:
                self.problem += f"; its input contract looks wrong: {'; '.join(hints)}"
            self.state = "failed"
            _log.error("mnist-onnx serve: %s", self.problem)
        else:
            self.state, self.problem = "ready", ""
            _log.info(
                "mnist-onnx serve: model %r ready in %.1f s (sha256 %s, bundled sample accuracy %.2f%%, %s)",
                self.config.name,
                time.monotonic() - started,
                self.sha256,
                100 * self.sample_accuracy,
                inline_phrase(self.inline_max_images),
            )
        finally:
            self.loaded.set()

    def _warm_up(self) -> None:
        for n in sorted({1, min(self.config.max_batch_size, 64), self.config.max_batch_size}):
            self.classifier.predict_proba(np.zeros((n, 28, 28), dtype=np.uint8))

    def _inline_limit(self) -> int:
        """The idle fast path's limit: given, or the largest of 1, 2, 4, 8, 16 images predicted within budget.

        Each size is timed three times after the warm-up (the fastest counts), so a
        model too slow to hold the event loop, or one that blocks, never runs inline.
        """
        if self.config.inline_max_images is not None:
            return self.config.inline_max_images
        limit = 0
        for n in (1, 2, 4, 8, 16):
            images = np.zeros((n, 28, 28), dtype=np.uint8)
            fastest = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                self.classifier.predict_proba(images)
                fastest = min(fastest, time.perf_counter() - started)
            if fastest * 1000.0 > INLINE_BUDGET_MS:
                break
            limit = n
        return limit

    def _check_sample(self) -> float:
        from ..runtime import read_kaggle_csv

        sample = read_kaggle_csv(SAMPLE, require_labels=True)
        started = time.perf_counter()
        predicted = self.classifier.predict_proba(sample.images).argmax(axis=1)
        # The admission estimate's first figure: 1,000 images in one call, after the warm-up.
        self.images_per_second = len(sample) / max(time.perf_counter() - started, 1e-9)
        accuracy = float(np.mean(self.labels[predicted] == sample.labels))
        expected = self.config.min_sample_accuracy
        if expected is None:
            expected = DEFAULT_MIN_SAMPLE_ACCURACY
            if self.config.model is None:
                expected = float(_card()["sample_accuracy"][self.config.precision or "fp32"])
        if accuracy < expected:
            raise ModelError(
                f"accuracy {accuracy:.2%} on the bundled sample of {len(sample):,} labelled digits, "
                f"expected at least {expected:.2%}"
            )
        return accuracy


def inline_phrase(limit: int) -> str:
    """The start-up log's words for the idle fast path's limit.

    >>> inline_phrase(0)
    'idle fast path off'
    >>> inline_phrase(1)
    'a 1-image request predicted at once when idle'
    >>> inline_phrase(16)
    'requests of up to 16 images predicted at once when idle'
    """
    if limit <= 0:
        return "idle fast path off"
    if limit == 1:
        return "a 1-image request predicted at once when idle"
    return f"requests of up to {limit} images predicted at once when idle"


def _int_labels(class_labels: Any) -> np.ndarray:
    labels = list(class_labels)
    if all(isinstance(label, (int, np.integer)) for label in labels):
        return np.asarray(labels, dtype=np.int64)
    return np.arange(len(labels), dtype=np.int64)  # non-integer labels: the class index


def _digit_classifier(config: ServeConfig) -> Any:
    from ..runtime import DigitClassifier

    # ServeConfig.precision is "fp32", "int8" or None (argparse choices); DigitClassifier checks it again.
    return DigitClassifier(
        config.model,
        providers=config.providers,
        threads=config.threads,
        spinning=config.spinning,
        precision=cast(Any, config.precision),
        batch_size=config.batch_size,
        pixel_scale=config.pixel_scale,
        normalize=config.normalize,
        output=config.output,
    )
