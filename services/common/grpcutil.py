"""gRPC plumbing: service identity, required deadlines, and client channels."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc import aio

from services.common import telemetry

IDENTITY_HEADER = "x-service-name"
TOKEN_HEADER = "x-service-token"
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 2.0
KNOWN_SERVICES = frozenset({"orders", "payments", "membership", "analytics"})


def service_token(secret: str, service: str) -> str:
    """The identity token a service presents: HMAC of its name with the shared secret."""
    return hmac.new(secret.encode(), service.encode(), hashlib.sha256).hexdigest()


def _abort_handler(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(_request: Any, context: aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class ServiceIdentityInterceptor(aio.ServerInterceptor):
    """Admits only known services, each to the methods it may call, and only with a deadline.

    `allowed` maps a caller's service name to method names (e.g. "Authorize") it may call.
    """

    def __init__(self, secret: str, allowed: Mapping[str, set[str]]) -> None:
        self.allowed = allowed
        # Every service can prove who it is; the allow-list then says what it may call.
        self.tokens = {name: service_token(secret, name) for name in KNOWN_SERVICES | set(allowed)}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = dict(details.invocation_metadata or ())
        caller = str(metadata.get(IDENTITY_HEADER, ""))
        token = str(metadata.get(TOKEN_HEADER, ""))
        expected = self.tokens.get(caller)
        if expected is None or not hmac.compare_digest(token, expected):
            return _abort_handler(
                grpc.StatusCode.UNAUTHENTICATED, "a valid service identity is required"
            )
        method = details.method.rsplit("/", 1)[-1]
        if method not in self.allowed.get(caller, set()):
            return _abort_handler(
                grpc.StatusCode.PERMISSION_DENIED, f"service {caller!r} may not call {method}"
            )
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        return _require_deadline(handler)


def _require_deadline(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary

    async def behaviour(request: Any, context: aio.ServicerContext) -> Any:
        if context.time_remaining() is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "every call needs a deadline")
        return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _IdentityClientInterceptor(aio.UnaryUnaryClientInterceptor):
    """Adds the caller's identity and a default deadline to every call."""

    def __init__(self, service: str, token: str, timeout_s: float) -> None:
        self.metadata = ((IDENTITY_HEADER, service), (TOKEN_HEADER, token))
        self.timeout_s = timeout_s

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = aio.Metadata(*self.metadata)
        for key, value in details.metadata or ():
            metadata.add(key, value)
        details = details._replace(
            metadata=metadata,
            timeout=details.timeout if details.timeout is not None else self.timeout_s,
            # While a peer restarts, wait (within the deadline) for the channel to reconnect
            # rather than failing at once with UNAVAILABLE.
            wait_for_ready=True if details.wait_for_ready is None else details.wait_for_ready,
        )
        return await continuation(details, request)


def channel(
    target: str, *, service: str, secret: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> aio.Channel:
    """An insecure loopback/cluster channel carrying identity, deadline and trace context."""
    interceptors = [
        _IdentityClientInterceptor(service, service_token(secret, service), timeout_s),
        *telemetry.grpc_client_interceptors(),
    ]
    return aio.insecure_channel(
        target,
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            # Spread calls over every replica behind a dns:/// target, not one sticky pod.
            ("grpc.lb_policy_name", "round_robin"),
            # Reconnect quickly after a peer restarts; the default backoff waits many seconds.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )


def server(secret: str, allowed: Mapping[str, set[str]]) -> aio.Server:
    return aio.server(
        interceptors=[
            telemetry.grpc_server_interceptor(),
            ServiceIdentityInterceptor(secret, allowed),
        ],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
