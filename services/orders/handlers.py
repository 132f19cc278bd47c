"""What orders does when another service's event arrives."""

from __future__ import annotations

import logging
import uuid

import asyncpg

from services.common.events import Event
from services.orders import settle
from services.orders.store import orders as store

log = logging.getLogger(__name__)


async def on_payment_refunded(conn: asyncpg.Connection, event: Event) -> None:
    """A full refund started in payments lands on the order: CONFIRMED → REFUNDED, stock back.

    Runs in the inbox's transaction; an order already REFUNDED (e.g. the member cancelled
    through orders, which started this refund) is left as it is.
    """
    msg = event.message()
    if msg.refunded < msg.captured or msg.captured == 0:
        log.info("partial refund; order unchanged", extra={"order_id": msg.order_id})
        return
    try:
        order_id = uuid.UUID(msg.order_id)
    except ValueError:
        log.warning("refund for a malformed order id", extra={"order_id": msg.order_id})
        return
    order = await store.get_order(conn, order_id, for_update=True)
    if order is None:
        log.warning("refund for an unknown order", extra={"order_id": msg.order_id})
        return
    await settle.mark_refunded(conn, order, amount=msg.refunded)
