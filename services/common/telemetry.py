"""OpenTelemetry tracing, trace context through NATS headers, and JSON logs with the trace id."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv.attributes import error_attributes

from services.common import asgi

if TYPE_CHECKING:
    from services.common.events import Event

_tracer = trace.get_tracer("marketplace")
# Whether spans are recorded (set by setup_tracing): decides which instrumentation runs.
_recording = False

# Attributes a LogRecord always has; anything else came in through `extra=` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids."""

    def __init__(self, service: str, instance: str | None = None) -> None:
        super().__init__()
        self.service, self.instance = service, instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(service: str, level: str = "INFO", *, instance: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, instance))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_tracing(service: str, *, instance: str | None = None) -> TracerProvider:
    """A tracer provider; spans are exported over OTLP only when the standard variables ask.

    With nowhere to export, new traces are not recorded (ids are still made and carried,
    so logs and `x-trace-id` keep working) unless OTEL_TRACES_SAMPLER says otherwise, and
    queries are not wrapped in spans: that would cost CPU on the checkout path for nothing.
    """
    exporting = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    configured = exporting or bool(os.environ.get("OTEL_TRACES_SAMPLER"))
    global _recording
    _recording = configured
    sampler = None if configured else ParentBased(ALWAYS_OFF)
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service} | ({"service.instance.id": instance} if instance else {})),
        sampler=sampler,
    )
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    if configured:
        # Query spans are leaves: unrecorded they carry nothing, yet the wrapper around
        # every statement would still cost CPU on the checkout path.
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=provider)
    return provider


_UNTRACED = ("/healthz", "/readyz", "/metrics")


def instrument_app(app: FastAPI) -> None:
    """Server spans for every request but the probes: OpenTelemetry's FastAPI middleware
    while spans are recorded, else `TraceContext` (the same ids for much less work)."""
    if not _recording:
        asgi.wrap_outermost(app, TraceContext)
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # One server span per request; the per-message send/receive spans say nothing more.
    FastAPIInstrumentor.instrument_app(app, excluded_urls=",".join(p[1:] for p in _UNTRACED),
                                       exclude_spans=["receive", "send"])


class TraceContext:
    """ASGI, outermost: continues the caller's trace (W3C headers) or starts one, for the
    request's logs, its `x-trace-id` and whatever it calls or publishes.

    While nothing records spans, the instrumented middleware would still match the request
    against every route for a span name and collect attributes nobody reads: about a tenth
    of a small request's CPU. An unsampled span costs only its ids.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED:
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        with continued_trace(scope["method"], carrier):
            await self.app(scope, receive, send)


def grpc_server_interceptors(*, untraced: Collection[str] = ()) -> list[Any]:
    """OpenTelemetry's server interceptor while spans are recorded, else none: the service
    identity check then continues the caller's trace itself (`continued_trace`). Calls to
    the `untraced` services (health, reflection: probes every few seconds) get no span, as
    /healthz and /readyz get none."""
    if not _recording:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    skipped = [filters.service_name(name) for name in untraced]
    return [aio_server_interceptor(
        filter_=filters.negate(filters.any_of(*skipped)) if skipped else None)]


@contextmanager
def continued_trace(name: str, carrier: dict[str, str]) -> Iterator[None]:
    """An unrecorded SERVER span that continues the trace in `carrier` (W3C headers), or
    starts one: its ids are what the work inside logs, calls and publishes."""
    parent = propagate.extract(carrier) if carrier else None
    with _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER):
        yield


def grpc_client_interceptors() -> list[Any]:
    """OpenTelemetry's client interceptors while spans are recorded, else none: unrecorded,
    a client span adds nothing the callee's server span does not (the channel then injects
    the trace context itself)."""
    if not _recording:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def inject(headers: dict[str, str]) -> None:
    """Write traceparent/tracestate of the current span into `headers`."""
    propagate.inject(headers)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# NATS spans follow OpenTelemetry's messaging conventions: a PRODUCER span per publish
# (`publish <subject>`) whose context travels in the message's headers, and a CONSUMER span
# per event processed (`process <subject>`), a child of that producer span and linked to it.
MESSAGING_SYSTEM = "nats"  # not one of the convention's well-known values: its own name


def _messaging(subject: str, message_id: str | None, operation: str, kind: str,
               body_size: int | None = None) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        messaging.MESSAGING_SYSTEM: MESSAGING_SYSTEM,
        messaging.MESSAGING_DESTINATION_NAME: subject,
        messaging.MESSAGING_OPERATION_NAME: operation,
        messaging.MESSAGING_OPERATION_TYPE: kind,
    }
    if message_id:
        attributes[messaging.MESSAGING_MESSAGE_ID] = message_id
    if body_size is not None:
        attributes[messaging.MESSAGING_MESSAGE_BODY_SIZE] = body_size
    return attributes


@contextmanager
def producer_span(subject: str, payload: bytes, headers: dict[str, str]
                  ) -> Iterator[dict[str, str]]:
    """A PRODUCER span around one publish; yields the headers to send, which carry its
    context (the consumer's `process` span is its child and links to it).

    Its parent is the trace context already in `headers` (the outbox row's: the request
    that made the event, so the publish is in that trace however late the relay sends it),
    else the current one. While spans are not recorded, the headers go as they are: the
    trace id still travels, and the relay pays nothing per event for a span nobody reads.
    """
    if not _recording:
        yield headers
        return
    parent = propagate.extract(headers) if "traceparent" in headers else None
    with _tracer.start_as_current_span(
        f"publish {subject}", context=parent, kind=trace.SpanKind.PRODUCER,
        attributes=_messaging(subject, headers.get("Nats-Msg-Id"), "publish", "send",
                              len(payload)),
    ) as span:
        sent = dict(headers)
        propagate.inject(sent)
        try:
            yield sent
        except Exception as exc:
            span.set_attribute(error_attributes.ERROR_TYPE, type(exc).__qualname__)
            raise


@contextmanager
def consumer_span(consumer: str, event: Event) -> Iterator[trace.Span]:
    """A CONSUMER `process` span that continues the trace the producer put in the headers:
    a child of the producer's span, and linked to it (the message's creation context)."""
    parent = propagate.extract(event.headers)
    creation = trace.get_current_span(parent).get_span_context()
    token = context.attach(parent)
    try:
        with _tracer.start_as_current_span(
            f"process {event.subject}",
            kind=trace.SpanKind.CONSUMER,
            attributes=_messaging(event.subject, str(event.id), "process", "process",
                                  len(event.data))
            | {messaging.MESSAGING_CONSUMER_GROUP_NAME: consumer},
            links=[trace.Link(creation)] if creation.is_valid else None,
        ) as span:
            yield span
    finally:
        context.detach(token)
