"""Composition root: infrastructure, the REST app and the three event consumers."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from grpc import aio

from services.analytics import handlers
from services.analytics.api import reports
from services.analytics.settings import AnalyticsSettings
from services.common import runtime, web
from services.common.inbox import Consumer, Handler

# Durable consumer name → (stream, subjects, handler): one pull consumer per stream.
CONSUMERS: dict[str, tuple[str, str, Handler]] = {
    "analytics-orders": ("ORDERS", "orders.>", handlers.on_order_event),
    "analytics-payments": ("PAYMENTS", "payments.>", handlers.on_payment_event),
    "analytics-membership": ("MEMBERSHIP", "membership.>", handlers.on_membership_event),
}


@dataclass
class Service:
    infra: runtime.Infra
    app: FastAPI
    grpc_server: aio.Server | None = None  # analytics only listens; it serves no gRPC
    grpc_port: int | None = None
    tasks: list[Coroutine[Any, Any, None]] = field(default_factory=list)


def create_app(settings: AnalyticsSettings, infra: runtime.Infra) -> FastAPI:
    app = web.create_app(
        title="Marketplace analytics",
        description="Live GMV, top products and payment health, projected from events.",
        readiness=infra.readiness,
        max_in_flight=settings.max_in_flight,
    )
    app.state.settings = settings
    app.state.pool = infra.pool
    app.include_router(reports.router)
    return app


async def start(settings: AnalyticsSettings) -> Service:
    infra = await runtime.start_infra(settings, Path(__file__).parent)
    for name, (stream, subjects, handler) in CONSUMERS.items():
        infra.consumers.append(Consumer(
            pool=infra.pool, bus=infra.bus, name=name, stream=stream, subjects=[subjects],
            handler=handler, batch_size=settings.consumer_batch_size,
        ))
    return Service(infra=infra, app=create_app(settings, infra))


async def main(settings: AnalyticsSettings) -> None:
    svc = await start(settings)
    await runtime.serve(svc.infra, svc.app, tasks=svc.tasks)
