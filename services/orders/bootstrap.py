"""Composition root: infrastructure, the REST app, gRPC clients, recovery and the consumer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from services.common import asgi, grpcutil, inbox, ratelimit, runtime, web
from services.common.auth import JwksVerifier
from services.orders import api, handlers, pipeline, recovery
from services.orders.admission import Admission, Clock
from services.orders.clients import MembershipClient, PaymentsClient
from services.orders.context import Context
from services.orders.page_cache import ListingFastPath, PageCache
from services.orders.settings import OrdersSettings
from services.orders.shedding import CheckoutShedding
from services.orders.store import idempotency


async def _close_when_stopped(channels: list[grpcutil.ServiceChannel]) -> None:
    """Holds the gRPC channels open while the service runs; closes them when cancelled."""
    try:
        await asyncio.Event().wait()
    finally:
        for channel in channels:
            await channel.close()


async def start(
    settings: OrdersSettings, *, payments: PaymentsClient | None = None,
    membership: MembershipClient | None = None, clock: Clock = time.monotonic,
) -> runtime.Service[Context]:
    """Everything but the serving loop. Tests may pass in the outside world: clients of
    payments and membership, and the clock of the rate limits and caches."""
    infra = await runtime.start_infra(settings, Path(__file__).parent)
    channels: list[grpcutil.ServiceChannel] = []  # the ones opened here, closed on the way out
    if payments is None:
        channels.append(_channel(settings, settings.payments_target))
        payments = PaymentsClient(channels[-1], timeout_s=settings.rpc_timeout_s)
    if membership is None:
        channels.append(_channel(settings, settings.membership_target))
        membership = MembershipClient(channels[-1], timeout_s=settings.rpc_timeout_s)
    admission = Admission.build(
        burst=settings.member_checkout_burst, per_s=settings.member_checkout_per_s,
        hot_limit=settings.hot_sku_max_in_flight, sold_out_s=settings.sold_out_cache_s,
        max_checkouts=settings.max_checkouts_in_flight, clock=clock)
    context = Context(
        settings=settings, pool=infra.pool, payments=payments, membership=membership,
        verifier=JwksVerifier.from_settings(settings), admission=admission,
        listings=PageCache(settings.listing_cache_s, clock=clock),
        pipeline=pipeline.build(settings, infra.pool, payments, admission),
    )
    app = web.create_app(
        title="Orders",
        description="Catalog, checkout (saga over payments and membership) and order history.",
        readiness=infra.readiness,
        max_in_flight=settings.max_in_flight,
        context=context,
    )
    app.include_router(api.router())
    asgi.wrap_outermost(app, lambda stack: ListingFastPath(
        stack, context.listings, paths=("/v1/products", "/v1/categories")))
    asgi.wrap_outermost(app, lambda stack: CheckoutShedding(
        stack, context.admission.checkouts, context.admission.hot_gate))
    infra.consumers.append(inbox.Consumer(
        pool=infra.pool, bus=infra.bus, name="orders-payments", stream="PAYMENTS",
        subjects=["payments.payment.refunded"], handler=handlers.on_payment_refunded,
    ))
    # Tiers for pricing: a checkout without points then asks membership nothing.
    infra.consumers.append(inbox.Consumer(
        pool=infra.pool, bus=infra.bus, name="orders-membership", stream="MEMBERSHIP",
        subjects=list(handlers.MEMBERSHIP_SUBJECTS), handler=handlers.on_membership_event,
    ))
    infra.purges.append(idempotency.PURGE)
    tasks = [recovery.run(context), ratelimit.keep_purged(infra.pool),
             _close_when_stopped(channels)]
    return runtime.Service(infra=infra, app=app, context=context, tasks=tasks)


def _channel(settings: OrdersSettings, target: str) -> grpcutil.ServiceChannel:
    return grpcutil.channel(target, service="orders", timeout_s=settings.rpc_timeout_s,
                            secret=settings.internal_auth_secret.get_secret_value())
