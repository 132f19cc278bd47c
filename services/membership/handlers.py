"""What membership does when an order event arrives (called inside the inbox transaction)."""

from __future__ import annotations

import uuid
from datetime import UTC

import asyncpg
from google.protobuf.message import DecodeError
from marketplace.events.v1 import events_pb2 as ev

from services.common.events import Event
from services.membership import loyalty
from services.membership.confirmations import Confirmation

CONSUMER = "membership-orders"
STREAM = "ORDERS"
CONFIRMED = "orders.order.confirmed"
SUBJECTS = (CONFIRMED, "orders.order.refunded")


async def handle(conn: asyncpg.Connection, event: Event) -> None:
    message = event.message()
    if isinstance(message, ev.OrderConfirmed):
        await on_order_confirmed(conn, message, event)
    elif isinstance(message, ev.OrderRefunded):
        await on_order_refunded(conn, message)
    else:
        raise ValueError(f"membership does not handle {event.subject}")


def member_of(event: Event) -> uuid.UUID | None:
    """The member whose row `handle` locks for the event; None where the event does not say
    (`handle` then fails on it before locking anything)."""
    try:
        message = event.message()
        if isinstance(message, ev.OrderConfirmed | ev.OrderRefunded):
            return uuid.UUID(message.member_id)
    except (ValueError, DecodeError):
        pass
    return None


def confirmation(message: ev.OrderConfirmed, event: Event) -> Confirmation:
    """The confirmation an `orders.order.confirmed` event carries, whichever path applies it."""
    confirmed_at = (
        message.confirmed_at.ToDatetime(tzinfo=UTC)
        if message.HasField("confirmed_at") else event.time
    )
    return Confirmation(order_id=uuid.UUID(message.order_id),
                        member_id=uuid.UUID(message.member_id), total=message.total.amount,
                        confirmed_at=confirmed_at)


async def on_order_confirmed(
    conn: asyncpg.Connection, message: ev.OrderConfirmed, event: Event
) -> None:
    order = confirmation(message, event)
    await loyalty.order_confirmed(
        conn, order_id=order.order_id, member_id=order.member_id, total=order.total,
        confirmed_at=order.confirmed_at,
    )


async def on_order_refunded(conn: asyncpg.Connection, message: ev.OrderRefunded) -> None:
    await loyalty.order_refunded(
        conn,
        order_id=uuid.UUID(message.order_id),
        member_id=uuid.UUID(message.member_id),
        refunded=message.refunded.amount,
        refunded_total=(
            message.refunded_total.amount if message.HasField("refunded_total") else None
        ),
    )
