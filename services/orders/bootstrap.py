"""Composition root: infrastructure, the REST app, gRPC clients, recovery and the consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from grpc import aio

from services.common import asgi, grpcutil, inbox, ratelimit, runtime, web
from services.common.auth import JwksVerifier
from services.common.runtime import Infra
from services.orders import api, handlers, recovery
from services.orders.admission import Admission
from services.orders.clients import MembershipClient, PaymentsClient
from services.orders.context import Context
from services.orders.page_cache import ListingFastPath, PageCache
from services.orders.settings import OrdersSettings
from services.orders.shedding import CheckoutShedding


@dataclass
class Service:
    infra: Infra
    app: FastAPI
    context: Context
    grpc_server: aio.Server | None = None
    grpc_port: int | None = None
    tasks: list[Coroutine[Any, Any, None]] = field(default_factory=list)


async def _close_when_stopped(channels: list[grpcutil.ServiceChannel]) -> None:
    """Holds the gRPC channels open while the service runs; closes them when cancelled."""
    try:
        await asyncio.Event().wait()
    finally:
        for channel in channels:
            await channel.close()


async def start(settings: OrdersSettings) -> Service:
    infra = await runtime.start_infra(settings, Path(__file__).parent)
    secret = settings.internal_auth_secret.get_secret_value()
    timeout = settings.rpc_timeout_s
    payments_channel = grpcutil.channel(
        settings.payments_target, service="orders", secret=secret, timeout_s=timeout)
    membership_channel = grpcutil.channel(
        settings.membership_target, service="orders", secret=secret, timeout_s=timeout)
    context = Context(
        settings=settings, pool=infra.pool,
        payments=PaymentsClient(payments_channel, timeout_s=timeout),
        membership=MembershipClient(membership_channel, timeout_s=timeout),
        verifier=JwksVerifier.from_settings(settings),
        admission=Admission.build(
            burst=settings.member_checkout_burst, per_s=settings.member_checkout_per_s,
            hot_limit=settings.hot_sku_max_in_flight, sold_out_s=settings.sold_out_cache_s,
            max_checkouts=settings.max_checkouts_in_flight),
        listings=PageCache(settings.listing_cache_s),
    )
    app = web.create_app(
        title="Orders",
        description="Catalog, checkout (saga over payments and membership) and order history.",
        readiness=infra.readiness,
        max_in_flight=settings.max_in_flight,
    )
    app.state.ctx = context
    app.include_router(api.router())
    asgi.wrap_outermost(app, lambda stack: ListingFastPath(
        stack, context.listings, paths=("/v1/products", "/v1/categories")))
    asgi.wrap_outermost(app, lambda stack: CheckoutShedding(stack, context.admission.checkouts))
    infra.consumers.append(inbox.Consumer(
        pool=infra.pool, bus=infra.bus, name="orders-payments", stream="PAYMENTS",
        subjects=["payments.payment.refunded"], handler=handlers.on_payment_refunded,
    ))
    tasks = [recovery.run(context), ratelimit.keep_purged(infra.pool),
             _close_when_stopped([payments_channel, membership_channel])]
    return Service(infra=infra, app=app, context=context, tasks=tasks)


async def main(settings: OrdersSettings) -> None:
    service = await start(settings)
    await runtime.serve(service.infra, service.app, tasks=service.tasks)
