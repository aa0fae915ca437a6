"""Prometheus metrics of the server (``GET /metrics``), in a registry of the app's own.

With ``--workers N`` each process counts its own requests; a Prometheus scrape
through the shared port sees one process at a time, so scrape each replica (as
Kubernetes does, one pod per replica) rather than running many workers per pod
when the figures matter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .batcher import BatchStats

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class ServerMetrics:
    """The server's counters, gauges and histograms.

    Metric names (all prefixed ``mnist_onnx_``): ``requests_total{endpoint,status}``,
    ``request_duration_seconds{endpoint}``, ``queue_wait_seconds``,
    ``batch_size_images``, ``queue_depth_requests``, ``images_predicted_total``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mnist_onnx_requests",
            "HTTP requests answered, by endpoint and status code",
            ("endpoint", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "mnist_onnx_request_duration_seconds",
            "Time from request to last byte sent",
            ("endpoint",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mnist_onnx_queue_wait_seconds",
            "Time a block of images waited for a batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mnist_onnx_batch_size_images",
            "Images per onnxruntime batch",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mnist_onnx_queue_depth_requests", "Requests waiting for a batch", registry=self.registry
        )
        self.images = Counter("mnist_onnx_images_predicted", "Images predicted", registry=self.registry)

    def batch_stats(self) -> BatchStats:
        """Callbacks that feed the batcher's figures into these metrics."""

        def on_batch(size: int) -> None:
            self.batch_size.observe(size)
            self.images.inc(size)

        return BatchStats(on_batch=on_batch, on_wait=self.queue_wait.observe, on_depth=self.queue_depth.set)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
