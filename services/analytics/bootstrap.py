"""Composition root: infrastructure, the REST app and the three event consumers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.analytics import handlers, metrics, store
from services.analytics.api import dashboard, insights, reports, views
from services.analytics.api.deps import Context
from services.analytics.batch import BatchConsumer
from services.analytics.handlers import BatchHandler
from services.analytics.live import Broadcaster
from services.analytics.settings import AnalyticsSettings
from services.common import runtime, web

# Durable consumer name → (stream, subjects, handler): one pull consumer per stream.
# Membership: only what is projected; points change on every order and are not (the
# server filters them out, so they cost no delivery, transaction or inbox row here).
CONSUMERS: dict[str, tuple[str, tuple[str, ...], BatchHandler]] = {
    "analytics-orders": ("ORDERS", ("orders.>",), handlers.on_order_event),
    "analytics-payments": ("PAYMENTS", ("payments.>",), handlers.on_payment_event),
    "analytics-membership": ("MEMBERSHIP", handlers.MEMBERSHIP_SUBJECTS,
                             handlers.on_membership_event),
}


def _batch_consumers(infra: runtime.Infra) -> list[BatchConsumer]:
    return [c for c in infra.consumers if isinstance(c, BatchConsumer)]


def _readiness(infra: runtime.Infra) -> web.ReadinessCheck:
    """The shared readiness, plus each consumer's newest applied event's age."""

    async def check() -> dict[str, Any]:
        detail = await infra.readiness()
        now = datetime.now(UTC)
        for c in _batch_consumers(infra):
            item = detail["consumers"]["items"].get(c.name)
            if item is not None:
                item["last_event_age_s"] = c.last_event_age(now)
        return detail

    return check


async def _refresh_gauges(infra: runtime.Infra) -> None:
    while True:
        now = datetime.now(UTC)
        for c in _batch_consumers(infra):
            age = c.last_event_age(now)
            if age is not None:
                metrics.LAST_EVENT_AGE.labels(c.name).set(age)
        await asyncio.sleep(1)


def create_app(infra: runtime.Infra, context: Context) -> FastAPI:
    app = web.create_app(
        title="Marketplace analytics",
        description="Live GMV, operator views, brand insights and the live dashboard, "
                    "projected from events.",
        readiness=_readiness(infra),
        max_in_flight=context.settings.max_in_flight,
        context=context,
    )
    for module in (reports, views, insights, dashboard):
        app.include_router(module.router)
    return app


async def start(settings: AnalyticsSettings) -> runtime.Service[Context]:
    """Everything but the serving loop (analytics calls no one: nothing to pass in)."""
    infra = await runtime.start_infra(settings, Path(__file__).parent)
    for name, (stream, subjects, handler) in CONSUMERS.items():
        infra.consumers.append(BatchConsumer(
            pool=infra.pool, bus=infra.bus, name=name, stream=stream, subjects=list(subjects),
            batch_handler=handler, batch_size=settings.consumer_batch_size,
            linger_s=settings.consumer_linger_ms / 1000,
        ))
    infra.purges.append(store.seconds_purge(timedelta(days=settings.second_retention_days)))
    context = Context(settings=settings, pool=infra.pool, broadcaster=Broadcaster(infra.pool))
    return runtime.Service(infra=infra, app=create_app(infra, context),
                           context=context, tasks=[_refresh_gauges(infra)])

