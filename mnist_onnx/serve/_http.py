"""HTTP plumbing of the server: reading bodies within limits, and two ASGI middlewares."""

from __future__ import annotations

import time
import zlib

from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import ServerMetrics
from .protocol import BadRequest

__all__ = ["PayloadTooLarge", "UnsupportedType", "read_body", "json_bytes", "TrailingSlash", "Metered"]


class PayloadTooLarge(BadRequest):
    """The body is over ``--max-body-mb`` (HTTP 413)."""

    status = 413


class UnsupportedType(BadRequest):
    """The body's content type is not one the endpoint takes (HTTP 415)."""

    status = 415


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with :class:`PayloadTooLarge` as soon as it is known to exceed ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before any byte is read; a
    streamed (chunked) body is refused at the chunk that crosses it. A gzip or
    deflate ``Content-Encoding`` is undone, with the same limit on what it unpacks to.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body: {int(declared):,} bytes is over the limit of {limit:,} (--max-body-mb)")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body: over the limit of {limit:,} bytes (--max-body-mb)")
        chunks.append(chunk)
    return _decoded(b"".join(chunks), request.headers.get("content-encoding", "").strip().lower(), limit)


#: Content-Encoding -> zlib's wbits (tritonclient's ``request_compression_algorithm`` sends gzip or deflate).
_ENCODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` with its Content-Encoding undone, refused past ``limit`` bytes (a small gzip unpacks to gigabytes).

    A gzip body may hold several members one after another (``cat a.gz b.gz``,
    pigz, bgzip): all are unpacked, as ``gzip.decompress`` does, never only the first.
    """
    if encoding in ("", "identity"):
        return body
    if encoding not in _ENCODINGS:
        raise UnsupportedType(f"Content-Encoding: expected gzip, deflate or none, got {encoding[:40]!r}")
    parts: list[bytes] = []
    total, rest, member = 0, body, 1
    while True:
        decoder = zlib.decompressobj(_ENCODINGS[encoding])
        try:
            data = decoder.decompress(rest, limit + 1 - total)
        except zlib.error as exc:
            where = "" if member == 1 else f" after the end of gzip member {member - 1}"
            raise BadRequest(f"request body: not {encoding} data{where} ({exc})") from None
        total += len(data)
        if total > limit:
            raise PayloadTooLarge(f"request body: over the limit of {limit:,} bytes once decompressed (--max-body-mb)")
        parts.append(data)
        if not decoder.eof:
            raise BadRequest(f"request body: the {encoding} data is cut short")
        rest = decoder.unused_data
        if not rest.strip(b"\0"):  # the end (gzip tools accept zero padding after the last member)
            return b"".join(parts)
        if _ENCODINGS[encoding] != 31:
            raise BadRequest(f"request body: {len(rest):,} bytes after the end of the {encoding} data")
        member += 1


def json_bytes(body: bytes, header_length: str | None) -> int:
    """How much of ``body`` is JSON (all of it without binary tensor data)."""
    if header_length is not None and header_length.isdigit():
        return min(len(body), int(header_length))
    return len(body)


class TrailingSlash:
    """ASGI middleware: ``/v2/health/ready/`` is answered as ``/v2/health/ready``, not redirected.

    Starlette would answer a 307 redirect, which clients that do not follow
    redirects (``tritonclient.http`` among them) report as an error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            stripped = path.rstrip("/") or "/"
            raw = scope.get("raw_path") or path.encode()
            scope = dict(scope, path=stripped, raw_path=raw.rstrip(b"/") or b"/")
        await self.app(scope, receive, send)


class Metered:
    """ASGI middleware: count each HTTP request by route and status, and time it to the last byte."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: list[Route]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._labels: dict[tuple[str, str], str] = {}

    def _endpoint(self, scope: Scope) -> str:
        key = (scope["method"], scope["path"])
        label = self._labels.get(key)
        if label is None:
            label = next((route.path for route in self.routes if route.matches(scope)[0] is not Match.NONE), "other")
            if len(self._labels) < 4096:  # bounded: paths with arbitrary model names are matched each time
                self._labels[key] = label
        return label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe(self._endpoint(scope), status, time.perf_counter() - started)
