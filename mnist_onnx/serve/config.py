"""The server's settings and their measured defaults (standard library only: the CLI's ``--help`` reads them)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = [
    "ServeConfig",
    "DEFAULT_SPINNING",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_TIMEOUT_MS",
    "DEFAULT_MAX_BODY_MB",
    "DEFAULT_MIN_SAMPLE_ACCURACY",
    "INLINE_BUDGET_MS",
    "STATIC_DIR",
    "CONFIG_ENV",
]

#: Images per batch.  Swept over 64-1,024 in benchmarks/serve_load.py (docs/serving.md, "Admission"):
#: 256 and 512 tied for 1,024-image requests and led for single images; with 256 a request that
#: arrives while a batch runs waits for at most 256 images in that batch.
DEFAULT_MAX_BATCH_SIZE = 256
#: Requests allowed to wait for a batch before new ones get 503: four times the largest concurrency
#: the benchmark drives (128).  It bounds memory (with the default body limit, at most 4 GiB of
#: request data); time is bounded by the deadline estimate in :mod:`.batcher`.
DEFAULT_MAX_QUEUE = 512
#: Time a request may wait for its first batch before it is answered 504 uncomputed: 2.2x the slowest
#: p99 of a benchmark cell that was not overloaded (1,024-image requests at concurrency 8: 4.5 s).
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_MAX_BODY_MB = 8.0
#: Idle onnxruntime threads sleep instead of spinning: the event loop and the
#: clients share the cores with them (single-image requests at concurrency 1
#: and 32 were faster with spinning off in benchmarks/serve_load.py).
DEFAULT_SPINNING = False
#: The idle fast path (see :mod:`.batcher`) takes requests whose prediction took at most this long
#: in the warm-up: about what parsing and answering one HTTP request costs, so holding the event
#: loop that long at idle costs a waiting client no more than one more request would.
INLINE_BUDGET_MS = 1.0
#: Accuracy a model other than the bundled ones must reach on the bundled sample before the server is ready.
DEFAULT_MIN_SAMPLE_ACCURACY = 0.98
STATIC_DIR = Path(__file__).parent / "static"
#: The environment variable that hands the settings to ``--workers`` processes.
CONFIG_ENV = "MNIST_ONNX_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """Everything the app needs to know; built from the command line or in code.

    Attributes:
        model: Path of an ONNX model, or None for the bundled model of ``precision``.
        precision: ``"fp32"`` or ``"int8"`` (bundled model), or None.
        name: The model's name in the protocol's URLs.
        providers: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"openvino"``.
        threads: onnxruntime threads, or None for one per physical core (divided among workers).
        spinning: Whether idle onnxruntime threads spin (None: the runtime's default, on).
        batch_size: Images per onnxruntime call inside a batch, or None for the runtime's default.
        max_batch_size: Most images in one batch; larger requests are split.
        max_queue_delay_ms: How long a batch may wait for more requests (0: never).
        max_queue: Requests allowed to wait; more get 503 with Retry-After.
        inline_max_images: Largest request predicted at once on the event loop when
            the server is idle (0: never; None: measured at start-up, the largest
            power of two up to 16 whose warm-up call took at most ``INLINE_BUDGET_MS``).
        timeout_ms: A request not in a batch after this long gets 504 and is never computed (an
            inference request's own ``timeout`` parameter, in microseconds, replaces it).
        max_body_mb: Largest request body, in MiB; larger gets 413.
        max_image_pixels: Largest uploaded image, width x height.
        max_images: Most images in one multipart upload.
        sha256: Expected sha256 of the model file, checked before the server is ready.
        min_sample_accuracy: Accuracy required on the bundled labelled sample
            (None: the model card's figure for a bundled model, else
            ``DEFAULT_MIN_SAMPLE_ACCURACY``).
        static_dir: Folder of the draw-a-digit page.
        pixel_scale: The model's input contract, as ``predict --pixel-scale``
            (None: the model's metadata, else 1/255).
        normalize: ``(mean, std)``, as ``predict --normalize`` (None: the model's metadata, else none).
        output: The model output holding the class scores, as ``predict --output``.
    """

    model: str | None = None
    precision: str | None = None
    name: str = "digits"
    providers: str = "auto"
    threads: int | None = None
    spinning: bool | None = DEFAULT_SPINNING
    batch_size: int | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_ms: float = 0.0
    max_queue: int = DEFAULT_MAX_QUEUE
    inline_max_images: int | None = None
    timeout_ms: float = DEFAULT_TIMEOUT_MS
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    max_image_pixels: int = 64_000_000  # the runtime's MAX_IMAGE_PIXELS (a 50-megapixel photo fits)
    max_images: int = 1024
    sha256: str | None = None
    min_sample_accuracy: float | None = None
    static_dir: str = str(STATIC_DIR)
    pixel_scale: float | None = None
    normalize: tuple[float, float] | None = None
    output: str | None = None

    @property
    def max_body_bytes(self) -> int:
        """``max_body_mb`` in bytes."""
        return int(self.max_body_mb * 1024 * 1024)

    def to_env(self) -> str:
        """The settings as JSON, for :data:`CONFIG_ENV`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        """The settings a parent process put in :data:`CONFIG_ENV` (defaults when unset)."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            return cls()
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in json.loads(raw).items() if k in known}
        if values.get("normalize") is not None:  # JSON has no tuples
            values["normalize"] = tuple(values["normalize"])
        return cls(**values)
