"""ASGI plumbing shared by the services' apps."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp


def wrap_outermost(app: FastAPI, wrapper: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put `wrapper` around the whole middleware stack as it is now, tracing included.

    For what must see every request first: the trace context, or answers so cheap that the
    layers they would skip cost more than they do (a cached listing; such a wrapper adds
    the service's headers and metrics itself). The last one wrapped is the outermost.
    """
    build = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        return wrapper(build())

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]
