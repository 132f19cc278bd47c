"""The client channel puts identity, a deadline, wait_for_ready and the trace context on
every call itself (no interceptors), and lets a caller's own values win."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.common import grpcutil


class Recorded:
    """Stands in for grpc's multicallable: records what a call was made with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: Any, **kwargs: Any) -> str:
        self.calls.append({"request": request, **kwargs})
        return "call"


class Inner:
    def __init__(self) -> None:
        self.methods: dict[str, tuple[Recorded, dict[str, Any]]] = {}

    def unary_unary(self, method: str, **kwargs: Any) -> Recorded:
        recorded = Recorded()
        self.methods[method] = (recorded, kwargs)
        return recorded


def _channel(*, inject_trace: bool) -> tuple[grpcutil.ServiceChannel, Inner]:
    inner = Inner()
    channel = grpcutil.ServiceChannel(inner, service="orders",  # type: ignore[arg-type]
                                      token="t0k", timeout_s=2.5, inject_trace=inject_trace)
    return channel, inner


def test_every_call_carries_identity_a_deadline_and_waits_for_a_reconnecting_peer() -> None:
    channel, inner = _channel(inject_trace=False)
    stub_method = channel.unary_unary("/p.v1.S/Authorize", request_serializer=str,
                                      _registered_method=True)
    assert stub_method("req").call == "call"
    recorded, registered = inner.methods["/p.v1.S/Authorize"]
    [call] = recorded.calls
    assert registered == {"request_serializer": str, "_registered_method": True}
    assert call["request"] == "req"
    assert call["metadata"] == (("x-service-name", "orders"), ("x-service-token", "t0k"))
    assert call["timeout"] == 2.5 and call["wait_for_ready"] is True


def test_the_callers_deadline_metadata_and_wait_choice_are_kept() -> None:
    channel, inner = _channel(inject_trace=False)
    channel.unary_unary("/p.v1.S/Capture")("req", timeout=0.3, metadata=[("k", "v")],
                                           wait_for_ready=False)
    [call] = inner.methods["/p.v1.S/Capture"][0].calls
    assert call["timeout"] == 0.3 and call["wait_for_ready"] is False
    assert ("k", "v") in call["metadata"] and ("x-service-name", "orders") in call["metadata"]


def test_without_tracing_interceptors_the_trace_context_is_injected() -> None:
    tracer = TracerProvider().get_tracer("test")
    channel, inner = _channel(inject_trace=True)
    with tracer.start_as_current_span("checkout") as span:
        channel.unary_unary("/p.v1.S/GetMember")("req")
    trace_id = format(span.get_span_context().trace_id, "032x")
    [call] = inner.methods["/p.v1.S/GetMember"][0].calls
    parents = [v for k, v in call["metadata"] if k == "traceparent"]
    assert len(parents) == 1 and parents[0].split("-")[1] == trace_id
    assert trace.get_current_span() is not span  # (the span ended with the block)


def test_with_tracing_interceptors_the_context_is_left_to_them() -> None:
    tracer = TracerProvider().get_tracer("test")
    channel, inner = _channel(inject_trace=False)
    with tracer.start_as_current_span("checkout"):
        channel.unary_unary("/p.v1.S/GetMember")("req")
    [call] = inner.methods["/p.v1.S/GetMember"][0].calls
    assert not [k for k, _ in call["metadata"] if k == "traceparent"]
