"""Service defaults for every FastAPI app: errors, health, metrics, overload shedding."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import errors, metrics, telemetry

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]
ContextT = TypeVar("ContextT")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# Unless the endpoint says otherwise (public listings), nothing may be stored by caches.
_NO_STORE = (b"cache-control", b"no-store")
_UNCOUNTED = {"/healthz", "/readyz", "/metrics"}


class ServiceMiddleware:
    """Bounds in-flight requests (503 + Retry-After beyond) and request bodies (413), records
    metrics, adds headers.

    Pure ASGI rather than BaseHTTPMiddleware: it sits on every request of the hot path.
    """

    def __init__(self, app: ASGIApp, *, max_in_flight: int, max_body_bytes: int = 1 << 20) -> None:
        self.app, self.max_in_flight, self.max_body_bytes = app, max_in_flight, max_body_bytes
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path not in _UNCOUNTED and self.in_flight >= self.max_in_flight:
            metrics.HTTP_REJECTED.inc()
            await send_problem(send, 503, problem_bytes(
                503, "overloaded", "Service overloaded",
                "too many requests in flight; retry after the given seconds"), RETRY_AFTER_1)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(send, receive)
            return
        status, started = 500, False
        start = time.perf_counter()
        body = _BodyLimit(receive, self.max_body_bytes)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if body.crossed:  # the app's answer to a cut-off body; ours is the 413
                return
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                trace_id = telemetry.current_trace_id()
                if trace_id:  # lets a client quote the trace when it reports a problem
                    headers.append((b"x-trace-id", trace_id.encode()))
                message["headers"] = headers
            await send(message)

        self.in_flight += 1
        try:
            try:
                await self.app(scope, body.receive, send_wrapper)
            except Exception:
                if not body.crossed:  # else: the app's reaction to the cut, answered below
                    raise
            if body.crossed and not started:
                status = 413
                await self._too_large(send, None if body.ended else receive)
        finally:
            self.in_flight -= 1
            if path not in _UNCOUNTED:
                _observe(scope, status, time.perf_counter() - start)

    async def _too_large(self, send: Send, unread: Receive | None) -> None:
        """413 at once; then drop what the client still sends (`unread`) for a moment, and close.

        The rest of the body is never read into the app, so the connection cannot carry
        another request. Closing a socket with unread data resets it, and a reset can destroy
        the answer before the client has read it; so, as nginx's lingering close does, the
        tail is read and thrown away first, within bounds (_LINGER_BYTES, _LINGER_S).
        """
        body = problem_bytes(
            413, "payload-too-large", "Payload too large",
            f"request bodies are limited to {self.max_body_bytes} bytes")
        await send_problem(send, 413, body, _CLOSE, more_body=unread is not None)
        if unread is not None:
            await _discard(unread)
            await send({"type": "http.response.body", "body": b""})


def _observe(scope: Scope, status: int, seconds: float) -> None:
    template = getattr(scope.get("route"), "path", "unmatched")
    metrics.HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
    metrics.HTTP_LATENCY.labels(scope["method"], template).observe(seconds)


class _BodyLimit:
    """Counts the request body as the app reads it, whatever its framing (Content-Length or
    chunked). Past `limit` the app is told the client has gone, so it stops where it is,
    and nothing past the limit is handed to it or held."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive, self._left = receive, limit
        self.crossed = self.ended = False

    async def receive(self) -> Message:
        if self.crossed:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._left -= len(message.get("body", b""))
            if self._left < 0:
                self.crossed, self.ended = True, not message.get("more_body", False)
                return {"type": "http.disconnect"}
        return message


async def _discard(receive: Receive) -> None:
    """Read and drop the rest of a refused body: at most _LINGER_BYTES, for _LINGER_S."""
    left = _LINGER_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_LINGER_S):
            while left > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                left -= len(message.get("body", b""))


RETRY_AFTER_1 = ((b"retry-after", b"1"),)
_CLOSE = ((b"connection", b"close"),)
# What a refused client may still have in flight; a sender of more is cut off (reset).
_LINGER_BYTES, _LINGER_S = 16 << 20, 2.0


def problem_bytes(status: int, slug: str, title: str, detail: str, **extra: Any) -> bytes:
    """A problem+json body, for answers sent below the app (no exception handler there)."""
    return bytes(errors.problem_response(status, slug, title, detail, **extra).body)


async def send_problem(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = (),
    *, more_body: bool = False,
) -> None:
    """Answer with a problem+json `body` at the ASGI level, with the service's headers
    (with `more_body`, the caller ends the answer later with an empty body message)."""
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", errors.PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            *headers, *SECURITY_HEADERS, _NO_STORE,
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


def create_app(
    *,
    title: str,
    version: str = "1.0.0",
    readiness: ReadinessCheck,
    max_in_flight: int,
    context: object,
    description: str = "",
    lifespan: Any = None,
) -> FastAPI:
    """A FastAPI app with /healthz, /readyz, /metrics, problem+json and overload protection.

    `context` is what the service's routes need (pool, clients, keys); they get it through
    `context_of`, so every service keeps it in the one place, `app.state.ctx`.
    """
    # FastAPI's own telemetry would start a second server span (and metrics and log
    # records) for every request beside ours (`telemetry.instrument_app`): off.
    app = FastAPI(
        title=title, version=version, description=description,
        lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = context
    errors.install(app)
    errors.document_problems(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        detail = await readiness()
        ok = all(v.get("ok", False) for v in detail.values() if isinstance(v, dict))
        return JSONResponse({"ready": ok, **detail}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    telemetry.instrument_app(app)
    app.add_middleware(ServiceMiddleware, max_in_flight=max_in_flight)
    return app


def context_of(kind: type[ContextT]) -> Callable[[HTTPConnection], Awaitable[ContextT]]:
    """The dependency that hands a route (HTTP or WebSocket) the service's context, typed as
    `kind`: `Ctx = Annotated[Context, Depends(web.context_of(Context))]`.

    Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a hop every
    request would pay for a lookup.
    """

    async def context(connection: HTTPConnection) -> ContextT:
        ctx: ContextT = connection.app.state.ctx
        return ctx

    return context
