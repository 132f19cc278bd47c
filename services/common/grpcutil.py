"""gRPC plumbing: service identity, required deadlines, health and reflection, and client
channels."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import grpcmetrics, telemetry

IDENTITY_HEADER = "x-service-name"
TOKEN_HEADER = "x-service-token"
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 2.0
KNOWN_SERVICES = frozenset({"orders", "payments", "membership", "analytics"})
# Callable without a service identity (probes, grpcurl and meshes have none) and without a
# deadline; they say whether the server serves and what it serves, nothing more. Every
# other method needs an identity.
OPEN_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})


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
    With `continue_trace` (no tracing interceptor in front of it) each call also runs in
    the caller's trace, taken from the metadata.
    """

    def __init__(self, secret: str, allowed: Mapping[str, set[str]], *,
                 continue_trace: bool = False) -> None:
        self.allowed, self.continue_trace = allowed, continue_trace
        # Every service can prove who it is; the allow-list then says what it may call.
        self.tokens = {name: service_token(secret, name) for name in KNOWN_SERVICES | set(allowed)}
        # Per method: the servicer's handler and its guarded form, built once, not per call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if _service_of(details.method) in OPEN_SERVICES:
            return await continuation(details)
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
        known = self._guarded.get(details.method)
        if known is None or known[0] is not handler:
            known = (handler, _guarded(handler, continue_trace=self.continue_trace))
            self._guarded[details.method] = known
        return known[1]


def _service_of(method: str) -> str:
    """The service a method belongs to: `/pkg.v1.Service/Method` -> `pkg.v1.Service`."""
    return method.lstrip("/").rpartition("/")[0]


def _guarded(handler: grpc.RpcMethodHandler, *, continue_trace: bool) -> grpc.RpcMethodHandler:
    """The handler, refusing a call without a deadline (and in the caller's trace)."""
    inner = handler.unary_unary

    async def behaviour(request: Any, context: aio.ServicerContext) -> Any:
        if context.time_remaining() is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "every call needs a deadline")
        if not continue_trace:
            return await inner(request, context)
        carrier = {k: v for k, v in context.invocation_metadata() or ()
                   if k in ("traceparent", "tracestate") and isinstance(v, str)}
        with telemetry.continued_trace("rpc", carrier):
            return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ServiceChannel:
    """A client channel whose unary calls carry the caller's identity, a default deadline,
    `wait_for_ready` and the trace context.

    They are added where the call is made, not by client interceptors: with any interceptor
    grpc wraps every RPC in an intercepted call object run by a task of its own, which
    cost about a third of a call's client CPU here. The OpenTelemetry interceptor is kept
    only while spans are recorded (see `telemetry.grpc_client_interceptors`); otherwise the
    trace context is injected here, so ids still flow to the callee.
    """

    def __init__(self, inner: aio.Channel, *, service: str, token: str, timeout_s: float,
                 inject_trace: bool) -> None:
        self.inner = inner
        self.metadata = ((IDENTITY_HEADER, service), (TOKEN_HEADER, token))
        self.timeout_s, self.inject_trace = timeout_s, inject_trace

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _IdentifiedCall:
        """What a generated stub asks for, for each of its methods."""
        return _IdentifiedCall(self.inner.unary_unary(method, *args, **kwargs), self,
                               grpcmetrics.ClientMetrics(method))

    async def channel_ready(self) -> None:
        await self.inner.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self.inner.close(grace)

    async def __aenter__(self) -> ServiceChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _IdentifiedCall:
    def __init__(self, call: aio.UnaryUnaryMultiCallable, channel: ServiceChannel,
                 measured: grpcmetrics.ClientMetrics) -> None:
        self.call, self.channel, self.measured = call, channel, measured

    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: Any = None, wait_for_ready: bool | None = None,
                 **kwargs: Any) -> Any:
        channel = self.channel
        sent = list(channel.metadata)
        if metadata:
            sent.extend(metadata)
        if channel.inject_trace:
            carrier: dict[str, str] = {}
            telemetry.inject(carrier)
            sent.extend(carrier.items())
        return self.measured.observe(self.call(
            request, metadata=tuple(sent),
            timeout=channel.timeout_s if timeout is None else timeout,
            # While a peer restarts, wait (within the deadline) for the channel to reconnect
            # rather than failing at once with UNAVAILABLE.
            wait_for_ready=True if wait_for_ready is None else wait_for_ready,
            **kwargs,
        ))


# Every call is balanced over every address the target resolves to (each replica behind a
# headless Service's dns:/// name, or each of an ipv4: list), not pinned to one connection.
# A call that ends UNAVAILABLE before any answer came back (its replica died or was going
# away) is sent again, to another replica, within the call's own deadline and with the same
# request, so the same idempotency key: the services' state-changing RPCs are idempotent on
# it. Retries pause after about 50 failures with no success between (every replica down).
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
})


def target(addresses: str) -> str:
    """A gRPC target from `host:port`, a URI (`dns:///name:port`, `ipv4:...`) or a
    comma-separated list of IP `address:port`s (one replica each), which becomes `ipv4:` or
    `ipv6:`. Raises ValueError for a list that names hosts: give those one dns:/// name."""
    parts = [p.strip() for p in addresses.split(",") if p.strip()]
    if not parts:
        raise ValueError("a gRPC target needs at least one address")
    if len(parts) == 1 or ":/" in addresses or addresses.startswith(("ipv4:", "ipv6:")):
        return ",".join(parts)
    families = {_ip_family(p) for p in parts}
    if len(families) != 1 or None in families:
        raise ValueError(f"several addresses must all be IPv4 or all IPv6 host:port, got "
                         f"{addresses!r}; for a name with several addresses use dns:///name:port")
    return f"{families.pop()}:{','.join(parts)}"


def _ip_family(address: str) -> str | None:
    host, _, port = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return f"ipv{ip.version}" if port.isdigit() else None


def channel(
    target: str, *, service: str, secret: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> ServiceChannel:
    """An insecure loopback/cluster channel carrying identity, deadline and trace context,
    balanced and retried per SERVICE_CONFIG; `target` as `target()` returns it."""
    interceptors = telemetry.grpc_client_interceptors()
    inner = aio.insecure_channel(
        target,
        interceptors=interceptors or None,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # Our config, not one a DNS TXT record could substitute.
            ("grpc.service_config_disable_resolution", 1),
            # Reconnect quickly after a peer restarts; the default backoff waits many seconds.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )
    return ServiceChannel(inner, service=service, token=service_token(secret, service),
                          timeout_s=timeout_s, inject_trace=not interceptors)


def server(secret: str, allowed: Mapping[str, set[str]]) -> aio.Server:
    """A server admitting callers per `allowed` (ServiceIdentityInterceptor); `runtime.serve`
    adds health and reflection (`add_health_and_reflection`) when it starts it."""
    tracing = telemetry.grpc_server_interceptors(untraced=OPEN_SERVICES)
    return aio.server(
        interceptors=[
            grpcmetrics.ServerMetricsInterceptor(),  # first: refused calls are counted too
            *tracing,
            ServiceIdentityInterceptor(secret, allowed, continue_trace=not tracing),
        ],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )


class Health:
    """`grpc.health.v1.Health` of one server: a status for the server as a whole ("") and
    one per service it serves (full names, e.g. `marketplace.payments.v1.PaymentService`).
    `runtime.serve` says SERVING once the server started and NOT_SERVING, for good, the
    moment it starts draining."""

    def __init__(self, services: Sequence[str]) -> None:
        self.services = ("", *services)
        self.servicer = health.aio.HealthServicer()

    async def serving(self) -> None:
        for name in self.services:
            await self.servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def draining(self) -> None:
        """NOT_SERVING for every service, and no later `serving` changes that."""
        await self.servicer.enter_graceful_shutdown()


def add_health_and_reflection(server: aio.Server, services: Sequence[str]) -> Health:
    """Serve health and reflection on `server` (before it starts) for `services`, which
    reflection lists besides itself and health. Both are open to callers without an
    identity (OPEN_SERVICES). Health answers NOT_FOUND for the services until `serving`."""
    checker = Health(services)
    health_pb2_grpc.add_HealthServicer_to_server(checker.servicer, server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return checker
