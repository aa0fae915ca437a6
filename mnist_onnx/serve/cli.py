"""Options of ``mnist-onnx serve`` (standard library imports only, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from .._argtypes import non_negative_int, positive_int
from ..runtime.inspect_cli import add_contract_options
from .config import (
    CONFIG_ENV,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MIN_SAMPLE_ACCURACY,
    DEFAULT_SPINNING,
    DEFAULT_TIMEOUT_MS,
    ServeConfig,
)

EXTRA = "serve"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# import name -> the distribution the extra installs
_NEEDED = {
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "prometheus_client": "prometheus-client",
    "python_multipart": "python-multipart",
}


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value:g}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value:g} (0.99 means 99%)")
    return value


def _model_name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected letters, digits, '.', '_' or '-' (it goes in the URLs), got {text!r}"
        )
    return text


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"expected 64 hexadecimal digits (sha256sum's output), got {text[:80]!r}")
    return text.lower()


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add ``serve`` to the ``mnist-onnx`` parser."""
    serve = sub.add_parser(
        "serve",
        help="serve the model over HTTP: Open Inference Protocol, adaptive batching, a draw-a-digit page",
        description=(
            "Serve an ONNX digit classifier over HTTP with the Open Inference Protocol (KServe v2, with "
            "Triton's binary tensor data), POST /v1/predict for images and Kaggle CSVs, Prometheus metrics "
            "at /metrics and a draw-a-digit page at /. Concurrent requests are batched adaptively. "
            f"Needs: pip install 'mnist-onnx[{EXTRA}]'."
        ),
    )
    net = serve.add_argument_group("network")
    net.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    net.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    net.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="server processes sharing the port, each with its own model session and an equal "
        "share of the cores (default: 1)",
    )
    net.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="HTTP parser (default: auto, httptools when installed)",
    )
    net.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (default: auto, uvloop when installed)",
    )
    net.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    model = serve.add_argument_group("model")
    model.add_argument("--model", metavar="PATH", help="ONNX model (default: the bundled model of --precision)")
    model.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        help="which bundled model (default: fp32); with --model, checked against its metadata",
    )
    model.add_argument(
        "--name", type=_model_name, default="digits", help="the model's name in the URLs (default: digits)"
    )
    model.add_argument(
        "--provider",
        choices=("auto", "cpu", "cuda", "openvino"),
        default="auto",
        help="execution provider, as for predict (default: auto: CUDA when onnxruntime-gpu sees a GPU, else the "
        "faster of the CPU provider and OpenVINO, measured once per machine)",
    )
    model.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="onnxruntime threads per worker (default: the physical cores divided among --workers)",
    )
    model.add_argument(
        "--spinning",
        choices=("on", "off"),
        help="whether idle onnxruntime threads spin waiting for work (default: off, measured "
        "faster when HTTP handling shares the cores)",
    )
    model.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="images per onnxruntime call inside a batch (default: the runtime's, 16 on the CPU)",
    )
    model.add_argument(
        "--sha256",
        metavar="HEX",
        type=_sha256,
        help="refuse to start unless the model file has this sha256 (bundled models are always "
        "checked against their model card)",
    )
    model.add_argument(
        "--min-sample-accuracy",
        type=_fraction,
        metavar="FRACTION",
        help="accuracy the model must reach on the bundled labelled sample before the server is "
        f"ready (default: the model card's figure for a bundled model, else "
        f"{DEFAULT_MIN_SAMPLE_ACCURACY})",
    )
    add_contract_options(serve)
    batching = serve.add_argument_group("batching and limits")
    batching.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=DEFAULT_MAX_BATCH_SIZE,
        metavar="N",
        help=f"most images in one batch; larger requests are split (default: {DEFAULT_MAX_BATCH_SIZE})",
    )
    batching.add_argument(
        "--max-queue-delay-ms",
        type=_non_negative_float,
        default=0.0,
        metavar="MS",
        help="how long a batch may wait for more requests (default: 0, take whatever queued while the last batch ran)",
    )
    batching.add_argument(
        "--inline-max-images",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="requests of up to N images are predicted at once when the server is idle, without the queue "
        "(default: measured at start-up, the largest of 1-16 whose warm-up call took under a millisecond; 0: never)",
    )
    batching.add_argument(
        "--max-queue",
        type=positive_int,
        default=DEFAULT_MAX_QUEUE,
        metavar="N",
        help=f"requests allowed to wait; more are answered 503 with Retry-After (default: {DEFAULT_MAX_QUEUE})",
    )
    batching.add_argument(
        "--timeout-ms",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_MS,
        metavar="MS",
        help=f"a request not in a batch after this long is answered 504 and never computed "
        f"(default: {DEFAULT_TIMEOUT_MS:,})",
    )
    batching.add_argument(
        "--max-body-mb",
        type=_positive_float,
        default=DEFAULT_MAX_BODY_MB,
        metavar="MB",
        help=f"largest request body in MiB, else 413 (default: {DEFAULT_MAX_BODY_MB:g})",
    )
    batching.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=ServeConfig.max_image_pixels,
        metavar="N",
        help="largest uploaded image, width x height, checked before decoding (default: 64,000,000)",
    )
    batching.add_argument(
        "--max-images",
        type=positive_int,
        default=ServeConfig.max_images,
        metavar="N",
        help="most images in one multipart upload (default: 1,024)",
    )
    serve.set_defaults(handler=_run_serve)


def _config(args: argparse.Namespace) -> ServeConfig:
    threads = args.threads
    if threads is None and args.workers > 1:
        from ..runtime.defaults import physical_cores

        threads = max(1, physical_cores() // args.workers)
    return ServeConfig(
        model=args.model,
        precision=args.precision,
        name=args.name,
        providers=args.provider,
        threads=threads,
        spinning=DEFAULT_SPINNING if args.spinning is None else args.spinning == "on",
        batch_size=args.batch_size,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue=args.max_queue,
        inline_max_images=args.inline_max_images,
        timeout_ms=args.timeout_ms,
        max_body_mb=args.max_body_mb,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        sha256=args.sha256,
        min_sample_accuracy=args.min_sample_accuracy,
        pixel_scale=args.pixel_scale,
        normalize=args.normalize,
        output=args.output,
    )


def _log_config(uvicorn: Any) -> dict[str, Any]:
    """uvicorn's logging setup, plus the server's own logger on the same handler."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["mnist_onnx.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return dict(config)


def _run_serve(args: argparse.Namespace) -> int:
    from .._extras import require

    for module in _NEEDED:
        require(module, EXTRA)
    from ..errors import MnistOnnxError

    if not 0 <= args.port <= 65535:
        raise MnistOnnxError(f"--port: expected 0-65535, got {args.port}")
    run_server(
        _config(args),
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=args.http,
        loop=args.loop,
        access_log=args.access_log,
    )
    print("mnist-onnx serve: stopped; every request in flight was answered", file=sys.stderr)
    return 0


def _check_address(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so a port in use fails in one line before the model loads."""
    from ..errors import MnistOnnxError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise MnistOnnxError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def run_server(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    http: str = "auto",
    loop: str = "auto",
    access_log: bool = False,
    classifier_factory: Callable[[ServeConfig], Any] | None = None,
) -> None:
    """Run the server until SIGINT or SIGTERM; both drain the requests in flight, then return.

    Args:
        config: The app's settings.
        host: Address to bind.
        port: Port to bind (0: any free port).
        workers: Processes sharing the port (each loads the model itself).
        http: uvicorn's HTTP parser.
        loop: uvicorn's event loop.
        access_log: Log every request.
        classifier_factory: Builds the classifier (one worker only); see
            :func:`mnist_onnx.serve.app.create_app`.

    Raises:
        ModelError: If the model file cannot be read or fails its sha256 check.
        MnistOnnxError: If ``host:port`` cannot be bound (in use, not this machine's), or if
            ``classifier_factory`` is given with more than one worker.
    """
    import uvicorn

    from ..errors import MnistOnnxError
    from .model import check_model_file, log_contract_warnings_only

    if classifier_factory is not None and workers > 1:
        raise MnistOnnxError("a classifier factory cannot be handed to --workers processes")
    _check_address(host, port)
    check_model_file(config)  # a wrong path or sha256 fails here, once, not in every worker
    log_contract_warnings_only()
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        http=http,
        loop=loop,
        access_log=access_log,
        log_config=_log_config(uvicorn),
        timeout_graceful_shutdown=None,
    )
    # uvicorn drains in-flight requests on SIGTERM, then raises the signal again once its own handler is
    # gone; with this no-op in place that second delivery is ignored and the command exits 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        if workers == 1:
            from .app import create_app

            uvicorn.run(create_app(config, classifier_factory=classifier_factory), **options)
        else:
            os.environ[CONFIG_ENV] = config.to_env()
            uvicorn.run("mnist_onnx.serve.app:app_from_env", factory=True, workers=workers, **options)
    finally:
        signal.signal(signal.SIGTERM, previous)
