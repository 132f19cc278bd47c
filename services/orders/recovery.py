"""The recovery loop: drives PENDING orders nobody is finishing, and unsettled points.

A crash (of orders, payments or membership) at any saga step leaves an order PENDING
or its points unsettled; this loop finishes the job with the same idempotency keys.
"""

from __future__ import annotations

import asyncio
import logging

from services.orders import settle
from services.orders.clients import Unavailable
from services.orders.context import Context
from services.orders.domain.order import OrderStatus
from services.orders.store import orders as store

log = logging.getLogger(__name__)


async def run(ctx: Context) -> None:
    """Recover on start, then every `recovery_interval_s`, until cancelled."""
    while True:
        try:
            await recover_once(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bad pass must not end the loop; the next one retries
            log.exception("recovery pass failed")
        await asyncio.sleep(ctx.settings.recovery_interval_s)


async def recover_once(ctx: Context) -> int:
    """One pass: returns how many PENDING orders reached a final state."""
    settings = ctx.settings
    # Long enough for one drive (a few calls, each bounded by its deadline).
    lease_s = max(settings.recovery_grace_s, 5 * settings.rpc_timeout_s)
    async with ctx.pool.acquire() as conn:
        due = await store.claim_due(
            conn, limit=settings.recovery_batch, lease_s=lease_s,
            backoff_s=settings.recovery_backoff_s, max_backoff_s=settings.recovery_backoff_max_s)
    finished = 0
    for order_id in due:
        async with ctx.pool.acquire() as conn:
            order = await store.get_order(conn, order_id)
        if order is None or order.status != OrderStatus.PENDING:
            continue
        try:
            order = await settle.drive(ctx, order, ask_first=True)
        except Unavailable as exc:
            log.info("order still pending", extra={"order_id": str(order_id), "error": str(exc)})
            continue
        finished += order.status != OrderStatus.PENDING
    await _settle_points(ctx)
    return finished


async def _settle_points(ctx: Context) -> None:
    async with ctx.pool.acquire() as conn:
        rows = await store.points_due(conn, limit=ctx.settings.recovery_batch)
    for row in rows:
        if row["status"] == OrderStatus.PENDING:
            continue
        async with ctx.pool.acquire() as conn:
            order = await store.get_order(conn, row["id"])
        if order is not None:
            await settle.settle_points(ctx, order)
