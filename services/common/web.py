"""Service defaults for every FastAPI app: errors, health, metrics, overload shedding."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import errors, metrics, telemetry

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# Unless the endpoint says otherwise (public listings), nothing may be stored by caches.
_NO_STORE = (b"cache-control", b"no-store")
_UNCOUNTED = {"/healthz", "/readyz", "/metrics"}


class ServiceMiddleware:
    """Bounds in-flight requests (503 + Retry-After beyond), records metrics, adds headers.

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
            await send_problem(send, 413, problem_bytes(
                413, "payload-too-large", "Payload too large",
                f"request bodies are limited to {self.max_body_bytes} bytes"))
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
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
            await self.app(scope, receive, send_wrapper)
        finally:
            self.in_flight -= 1
            if path not in _UNCOUNTED:
                route = scope.get("route")
                template = getattr(route, "path", "unmatched")
                metrics.HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
                metrics.HTTP_LATENCY.labels(scope["method"], template).observe(
                    time.perf_counter() - start
                )


RETRY_AFTER_1 = ((b"retry-after", b"1"),)


def problem_bytes(status: int, slug: str, title: str, detail: str, **extra: Any) -> bytes:
    """A problem+json body, for answers sent below the app (no exception handler there)."""
    return bytes(errors.problem_response(status, slug, title, detail, **extra).body)


async def send_problem(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer with a problem+json `body` at the ASGI level, with the service's headers."""
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", errors.PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            *headers, *SECURITY_HEADERS, _NO_STORE,
        ],
    })
    await send({"type": "http.response.body", "body": body})


def create_app(
    *,
    title: str,
    version: str = "1.0.0",
    readiness: ReadinessCheck,
    max_in_flight: int,
    description: str = "",
    lifespan: Any = None,
) -> FastAPI:
    """A FastAPI app with /healthz, /readyz, /metrics, problem+json and overload protection."""
    app = FastAPI(
        title=title, version=version, description=description,
        lifespan=lifespan,
    )
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
