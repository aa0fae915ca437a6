"""The Starlette app: the Open Inference Protocol endpoints, ``/v1/predict``, metrics and the page.

Endpoints:

- ``GET /v2/health/live``: 200 while the process runs.
- ``GET /v2/health/ready`` and ``GET /v2/models/{name}/ready``: 200 once the
  model passed its start-up checks (see :mod:`.model`), else 503 with the reason.
- ``GET /v2``: server metadata; ``GET /v2/models/{name}``: model metadata.
- ``POST /v2/models/{name}[/versions/1]/infer``: inference, JSON or binary tensor data.
- ``POST /v1/predict``: one image body, multipart images, or a Kaggle CSV.
- ``GET /metrics``: Prometheus text format.
- ``GET /`` and ``GET /static/{file}``: the draw-a-digit page.

Every error is the protocol's JSON form ``{"error": "one line"}``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from .. import __version__
from ..errors import MnistOnnxError
from ._http import Metered, TrailingSlash, UnsupportedType, json_bytes, read_body
from .batcher import DeadlineExceeded, QueueFull, ServerStopping
from .config import ServeConfig
from .metrics import ServerMetrics
from .model import ServedModel, log_contract_warnings_only
from .protocol import INPUT_NAME, BadRequest, encode_infer_response, error_body, parse_infer_request
from .uploads import prepare_image, read_csv_body

__all__ = ["create_app", "app_from_env"]

_log = logging.getLogger("mnist_onnx.serve")
#: Below this top probability, /v1/predict adds a warning for the person who sent the image.
LOW_CONFIDENCE = 0.5
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: JSON request parts larger than this are parsed on a worker thread, so a 10 MiB tensor written as
#: JSON (tens of milliseconds to decode) does not hold every other connection; smaller ones (one
#: image is about 3 KB) are parsed on the event loop, which is faster than the hand-off.
PARSE_ON_LOOP_BYTES = 64 * 1024


class NotFound(BadRequest):
    """No such model or file (HTTP 404)."""

    status = 404


class NotReady(RuntimeError):
    """The model is still loading or failed its start-up checks (HTTP 503).

    Args:
        message: The one-line reason.
        retry: Whether waiting helps (loading: answered with ``Retry-After``; a
            failed check never clears, so no ``Retry-After`` invites clients to poll).
    """

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status_code=status, media_type="application/json", headers=headers)


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turn every failure into the protocol's JSON error with the right status; never a bare 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except QueueFull as exc:
            return _error(503, f"overloaded: {exc}; retry later", {"retry-after": str(exc.retry_after_s)})
        except NotReady as exc:
            return _error(503, str(exc), {"retry-after": "1"} if exc.retry else None)
        except ServerStopping as exc:
            return _error(503, str(exc), {"retry-after": "1"})
        except DeadlineExceeded as exc:
            return _error(504, f"timeout: {exc}")
        except ClientDisconnect:  # nobody reads this answer; it keeps the client's fault out of the 500s
            return _error(400, "request body: the client closed the connection before sending all of it")
        except MnistOnnxError as exc:
            return _error(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # answered as 500 with one line; the traceback goes to the log
            _log.exception("mnist-onnx serve: unexpected error on %s %s", request.method, request.url.path)
            return _error(500, f"internal error: {type(exc).__name__}")

    return guarded


class _Server:
    """The handlers, sharing the served model and the metrics."""

    def __init__(self, config: ServeConfig, model: ServedModel) -> None:
        self.config = config
        self.model = model

    # -- helpers ------------------------------------------------------------

    def _check_model(self, request: Request) -> None:
        name = request.path_params.get("name", self.config.name)
        if name != self.config.name:
            raise NotFound(f"unknown model {name!r}; this server serves {self.config.name!r}")
        version = request.path_params.get("version")
        if version is not None and version != "1":
            raise NotFound(f"unknown version {version!r} of model {name!r}; the only version is '1'")

    def _batcher(self) -> Any:
        if not self.model.ready or self.model.batcher is None:
            raise NotReady(
                f"model {self.config.name!r} is not ready: {self.model.problem}", retry=self.model.state == "loading"
            )
        return self.model.batcher

    def _deadline(self) -> float:
        return time.monotonic() + self.config.timeout_ms / 1000.0

    # -- health and metadata -------------------------------------------------

    async def live(self, request: Request) -> Response:
        return Response(b"", status_code=200)

    async def ready(self, request: Request) -> Response:
        self._check_model(request)
        if self.model.ready:
            return Response(b"", status_code=200)
        return _error(503, f"model {self.config.name!r} is not ready: {self.model.problem}")

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(
            {"name": "mnist-onnx", "version": __version__, "extensions": ["binary_tensor_data", "classification"]}
        )

    async def model_metadata(self, request: Request) -> Response:
        self._check_model(request)
        classes = len(self.model.labels)
        answer: dict[str, Any] = {
            "name": self.config.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, 28, 28]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
        }
        if self.model.sha256:
            answer["parameters"] = {"sha256": self.model.sha256, "state": self.model.state}
        return JSONResponse(answer)

    # -- inference ------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        self._check_model(request)
        batcher = self._batcher()
        arrived = time.monotonic()
        # A full queue refuses before the body is read; the deadline estimate waits for the request's own
        # `timeout` parameter, which may be longer than --timeout-ms.
        batcher.admit(None)
        body = await read_body(request, self.config.max_body_bytes)
        header_length = request.headers.get("inference-header-content-length")
        if json_bytes(body, header_length) > PARSE_ON_LOOP_BYTES:  # a large JSON tensor: off the event loop
            parsed = await run_in_threadpool(parse_infer_request, body, header_length)
        else:
            parsed = parse_infer_request(body, header_length)
        # A request's own `timeout` parameter (microseconds, as Triton's clients send it) replaces the default.
        deadline = arrived + (parsed.timeout_s if parsed.timeout_s is not None else self.config.timeout_ms / 1000.0)
        probabilities = await batcher.predict(parsed.images, deadline)
        labels = self.model.labels[probabilities.argmax(axis=1)]
        payload, headers = encode_infer_response(self.config.name, parsed, probabilities, labels, self.model.labels)
        return Response(payload, headers=headers)

    async def predict(self, request: Request) -> Response:
        batcher = self._batcher()
        deadline = self._deadline()
        batcher.admit(deadline)  # a full queue refuses before the body is read
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("text/csv", "application/csv"):
            return await self._predict_csv(request, batcher, deadline)
        body = await read_body(request, self.config.max_body_bytes)
        if kind.startswith("image/") or kind == "application/octet-stream":
            uploads = [(body, "request body")]
        elif kind == "multipart/form-data":
            uploads = await self._multipart(request, body)
        else:
            raise UnsupportedType(
                f"content-type: expected image/png, image/jpeg (or another image type), "
                f"multipart/form-data or text/csv, got {kind or 'none'!r}"
            )
        digits: list[np.ndarray] = []
        notes: list[str] = []
        for data, what in uploads:
            # Decoding and preparing a phone photo takes tens of milliseconds: off the event loop.
            digit, warnings = await run_in_threadpool(
                prepare_image, data, what=what, max_pixels=self.config.max_image_pixels
            )
            digits.append(digit)
            notes.extend(f"{what}: {w}" if len(uploads) > 1 else w for w in warnings)
        images = np.stack(digits)
        probabilities = await batcher.predict(images, deadline)
        confidence = probabilities.max(axis=1)
        for i in np.flatnonzero(confidence < LOW_CONFIDENCE).tolist():
            notes.append(
                f"{uploads[i][1]}: low confidence ({confidence[i]:.0%}): the digit may be unclear, "
                f"cut off, or not a digit"
            )
        return JSONResponse(
            {
                "model_name": self.config.name,
                "labels": self.model.labels[probabilities.argmax(axis=1)].tolist(),
                "probabilities": probabilities.tolist(),
                "confidence": confidence.tolist(),
                "prepared": images.tolist(),
                "warnings": notes,
            }
        )

    async def _multipart(self, request: Request, body: bytes) -> list[tuple[bytes, str]]:
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=self.config.max_images, max_fields=16)
        except (MultiPartException, HTTPException) as exc:
            detail = str(getattr(exc, "message", None) or getattr(exc, "detail", None) or exc)
            if detail.startswith("Too many files"):  # python-multipart's words for max_files: name our option
                limit = self.config.max_images
                detail = f"more than {limit:,} files (--max-images {limit}); send the rest in another request"
            raise BadRequest(f"multipart body: {detail}") from None
        uploads = []
        try:
            for key, value in form.multi_items():
                if not isinstance(value, UploadFile):
                    raise BadRequest(f"multipart body: expected image files, got a text field {key!r}")
                name = " ".join((value.filename or "no file name").split())  # error lines stay one line
                uploads.append((await value.read(), f"part {key!r} ({name})"))
        finally:
            await form.close()
        if not uploads:
            raise BadRequest("multipart body: expected at least one image file")
        return uploads

    async def _predict_csv(self, request: Request, batcher: Any, deadline: float) -> Response:
        body = await read_body(request, self.config.max_body_bytes)
        images = await run_in_threadpool(read_csv_body, body)
        futures = batcher.submit(images, deadline)
        try:
            first = await futures[0]  # a deadline missed before the first batch is still a 504, not a cut stream
        except BaseException:
            for future in futures[1:]:  # failed with it: read, so asyncio does not log them as never retrieved
                if future.done() and not future.cancelled():
                    future.exception()
                else:
                    future.cancel()
            raise
        labels = self.model.labels

        async def rows() -> AsyncIterator[bytes]:
            image_id = 1
            for i, future in enumerate(futures):
                block = first if i == 0 else await future
                ids = np.arange(image_id, image_id + len(block))
                image_id += len(block)
                predicted = labels[block.argmax(axis=1)].tolist()
                lines = "".join(f"{n},{label}\n" for n, label in zip(ids.tolist(), predicted, strict=True))
                yield (("ImageId,Label\n" if i == 0 else "") + lines).encode()

        return StreamingResponse(
            rows(), media_type="text/csv", headers={"content-disposition": 'attachment; filename="submission.csv"'}
        )

    # -- metrics and the page ---------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        metrics: ServerMetrics = request.app.state.metrics
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def index(self, request: Request) -> Response:
        return self._static_file("index.html")

    async def static(self, request: Request) -> Response:
        return self._static_file(request.path_params["file"])

    def _static_file(self, name: str) -> Response:
        path = Path(self.config.static_dir) / name
        if not _STATIC_NAME.fullmatch(name) or not path.is_file():
            raise NotFound(f"no file {name!r} in the page's folder")
        return FileResponse(path)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None) or "error"
    return _error(status, f"{request.method} {request.url.path}: {detail}")


def create_app(
    config: ServeConfig | None = None,
    *,
    classifier_factory: Callable[[ServeConfig], Any] | None = None,
    load_before_serving: bool = False,
) -> Starlette:
    """Build the server's ASGI app.

    Args:
        config: Settings (default: :class:`ServeConfig`'s defaults, the bundled fp32 model).
        classifier_factory: Builds the classifier from the config (default:
            ``DigitClassifier``); anything with ``predict_proba`` and ``class_labels``.
        load_before_serving: Finish loading (and the start-up checks) before
            the lifespan's start-up returns, so this process takes no connection
            before it is ready (processes sharing a port); by default it loads in
            the background and answers liveness meanwhile.

    Returns:
        A Starlette app; the model loads when the app's lifespan starts.
    """
    config = config or ServeConfig()
    metrics = ServerMetrics()
    model = ServedModel(config, metrics.batch_stats(), classifier_factory)
    server = _Server(config, model)
    handlers = {
        name: _guarded(getattr(server, name))
        for name in (
            "live",
            "ready",
            "server_metadata",
            "model_metadata",
            "infer",
            "predict",
            "metrics",
            "index",
            "static",
        )
    }
    routes = [
        Route("/v2/health/live", handlers["live"], methods=["GET"]),
        Route("/v2/health/ready", handlers["ready"], methods=["GET"]),
        Route("/v2", handlers["server_metadata"], methods=["GET"]),
        Route("/v2/models/{name}", handlers["model_metadata"], methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", handlers["model_metadata"], methods=["GET"]),
        Route("/v2/models/{name}/ready", handlers["ready"], methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", handlers["ready"], methods=["GET"]),
        Route("/v2/models/{name}/infer", handlers["infer"], methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", handlers["infer"], methods=["POST"]),
        Route("/v1/predict", handlers["predict"], methods=["POST"]),
        Route("/metrics", handlers["metrics"], methods=["GET"]),
        Route("/", handlers["index"], methods=["GET"]),
        Route("/static/{file}", handlers["static"], methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        model.start()
        if load_before_serving:
            await run_in_threadpool(model.loaded.wait)
        try:
            yield
        finally:
            model.close()  # in-flight requests were answered before the lifespan ends

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, 405: _http_error, 404: _http_error},
    )
    app.state.metrics = metrics
    app.state.model = model
    app.state.config = config
    app.add_middleware(Metered, metrics=metrics, routes=routes)
    app.add_middleware(TrailingSlash)
    return app


def app_from_env() -> Starlette:
    """The app with the settings a parent ``mnist-onnx serve`` process left in the environment (``--workers``).

    The workers share one port: each loads its model before taking connections,
    so a readiness probe answered by one never vouches for a sibling still loading.
    """
    log_contract_warnings_only()
    return create_app(ServeConfig.from_env(), load_before_serving=True)
