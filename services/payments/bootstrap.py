"""Composition root: infrastructure, the processor behind its breaker, REST, gRPC, consumer."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from marketplace.payments.v1 import payments_pb2_grpc

from services.common import auth, grpcutil, inbox, runtime, web
from services.payments import handlers, rpc, service, store
from services.payments.api import refunds, routes
from services.payments.api.deps import ApiContext
from services.payments.breaker import CircuitBreaker, Clock
from services.payments.gateway import ProcessorGateway
from services.payments.processor import CardProcessor, SimulatedProcessor
from services.payments.rpc import ALLOWED_CALLERS, PaymentServicer
from services.payments.settings import PaymentsSettings


def build_gateway(
    settings: PaymentsSettings, processor: CardProcessor | None = None,
    clock: Clock = time.monotonic,
) -> ProcessorGateway:
    processor = processor or SimulatedProcessor(
        latency_s=settings.processor_latency_ms / 1000,
        failure_rate=settings.processor_failure_rate,
    )
    breaker = CircuitBreaker(
        window_s=settings.breaker_window_s, minimum_calls=settings.breaker_minimum_calls,
        failure_rate=settings.breaker_failure_rate, reset_after_s=settings.breaker_reset_s,
        half_open_trials=settings.breaker_half_open_trials, alive_s=settings.breaker_alive_s,
        clock=clock,
    )
    return ProcessorGateway(processor, breaker, timeout_s=settings.processor_timeout_ms / 1000)


async def start(
    settings: PaymentsSettings, *, processor: CardProcessor | None = None,
    clock: Clock = time.monotonic,
) -> runtime.Service[ApiContext]:
    """Everything but the serving loop. Tests may pass in the outside world: a card
    `processor` in place of the simulated one, and the clock of its circuit breaker."""
    infra = await runtime.start_infra(settings, Path(__file__).parent)
    gateway = build_gateway(settings, processor, clock)
    deps = service.Deps(
        pool=infra.pool, gateway=gateway, currency=settings.currency,
        commission_bps=settings.commission_bps,
    )
    context = ApiContext(
        pool=infra.pool, verifier=auth.JwksVerifier.from_settings(settings),
        admin_api_key=settings.admin_api_key.get_secret_value(), currency=settings.currency,
        payments=deps,
    )
    app = web.create_app(
        title="Marketplace payments",
        description="Payment look-ups for members and admins; merchant balances.",
        readiness=partial(_readiness, infra, gateway.breaker),
        max_in_flight=settings.max_in_flight,
        context=context,
    )
    app.include_router(routes.router)
    app.include_router(refunds.router)
    infra.consumers.append(inbox.Consumer(
        pool=infra.pool, bus=infra.bus, name=handlers.CONSUMER, stream=handlers.STREAM,
        subjects=handlers.SUBJECTS, handler=handlers.handle,
    ))
    infra.purges.append(
        store.idempotency_purge(timedelta(days=settings.idempotency_retention_days)))
    grpc_server = grpcutil.server(settings.internal_auth_secret.get_secret_value(), ALLOWED_CALLERS)
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentServicer(deps), grpc_server)
    return runtime.Service(
        infra=infra, app=app, context=context, grpc_server=grpc_server,
        grpc_port=settings.grpc_port, grpc_services=(rpc.SERVICE,),
    )


async def _readiness(infra: runtime.Infra, breaker: CircuitBreaker) -> dict[str, Any]:
    """The shared checks, plus the processor breaker's state and recent failure rate.

    An open breaker leaves the pod ready: every replica shares the one processor, so
    taking pods out of the load balancer would not bring it back; it would only stop the
    look-ups and the answers to orders' recovery that still work. It shows here and in
    `payments_processor_breaker_open` for the alert instead.
    """
    detail = await infra.readiness()
    detail["processor"] = {"ok": True, "breaker": breaker.snapshot()}
    return detail

