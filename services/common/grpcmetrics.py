"""gRPC metrics: each unary call's status code and latency, on the server and the client.

The server side is an interceptor in front of every other (so a call refused for its
identity is counted too); the client side wraps the call object the channel returns,
without a client interceptor (see `grpcutil.ServiceChannel` on their cost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import grpc
from grpc import aio

from services.common import metrics

_MAX_METHODS = 200


def labels(method: str) -> tuple[str, str]:
    """`/pkg.v1.Service/Method` -> (`pkg.v1.Service`, `Method`)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class ServerMetricsInterceptor(aio.ServerInterceptor):
    """Counts every unary call by status code and times it, whoever answers it."""

    def __init__(self) -> None:
        # Per method: the handler behind this interceptor and its measured form, built once.
        self._measured: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        known = self._measured.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        if known is None and len(self._measured) >= _MAX_METHODS:
            # Names no server serves (refused for the caller's identity before that was
            # known) must not grow the labels without bound.
            return _measured(handler, "unknown", "unknown")
        known = self._measured[details.method] = (
            handler, _measured(handler, *labels(details.method)))
        return known[1]


def _measured(handler: grpc.RpcMethodHandler, service: str, method: str
              ) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary
    latency = metrics.GRPC_SERVER_LATENCY.labels(service, method)

    async def behaviour(request: Any, context: aio.ServicerContext) -> Any:
        start = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            reply = await inner(request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:  # an abort (its code is on the context) or an error: UNKNOWN
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        else:
            code = context.code() or grpc.StatusCode.OK
            return reply
        finally:
            latency.observe(time.perf_counter() - start)
            metrics.GRPC_SERVER_HANDLED.labels(service, method, _name(code)).inc()

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _name(code: grpc.StatusCode | int | None) -> str:
    """The code's name; aio's context may hold the code as its integer value."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")


class ClientMetrics:
    """The client metrics of one method, bound once per stub method."""

    def __init__(self, method: str) -> None:
        self.service, self.method = labels(method)
        self.latency = metrics.GRPC_CLIENT_LATENCY.labels(self.service, self.method)

    def observe(self, call: Any) -> ObservedCall:
        return ObservedCall(call, self)

    def record(self, code: grpc.StatusCode, seconds: float) -> None:
        self.latency.observe(seconds)
        metrics.GRPC_CLIENT_HANDLED.labels(self.service, self.method, code.name).inc()


class ObservedCall:
    """A unary call object that records its status code and latency when awaited; anything
    else (cancel, metadata) is the call's own."""

    __slots__ = ("call", "metrics", "start")

    def __init__(self, call: Any, client: ClientMetrics) -> None:
        self.call, self.metrics, self.start = call, client, time.perf_counter()

    def __await__(self) -> Generator[Any, None, Any]:
        code = grpc.StatusCode.OK
        try:
            return (yield from self.call.__await__())
        except aio.AioRpcError as exc:
            code = exc.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.metrics.record(code, time.perf_counter() - self.start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.call, name)
