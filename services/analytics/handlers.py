"""What analytics does when an event arrives; the inbox runs each in its own savepoint."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1 import events_pb2 as ev

from services.analytics import metrics, store
from services.analytics.domain import orders
from services.analytics.domain.payments import normalise_status, status_rank
from services.analytics.domain.window import minute_of
from services.common.events import Event

Step = Callable[[orders.OrderFact], orders.Outcome]
SubjectHandler = Callable[[asyncpg.Connection, Event, Any], Awaitable[None]]


def _uuid(raw: str) -> uuid.UUID:
    return uuid.UUID(raw)


def _maybe_uuid(raw: str) -> uuid.UUID | None:
    return uuid.UUID(raw) if raw else None


def _when(ts: Timestamp, event: Event) -> datetime:
    """The domain time the producer stamped, else the envelope's ce-time."""
    if ts.seconds or ts.nanos:
        return ts.ToDatetime(tzinfo=UTC)
    return event.time


async def _apply(
    conn: asyncpg.Connection, order_id: str, member_id: str, step: Step
) -> list[orders.Contribution]:
    """Run one transition on the locked order row and book what it contributes."""
    oid = _uuid(order_id)
    fact, contributions = step(await store.lock_order(conn, oid))
    await store.save_order(conn, oid, _maybe_uuid(member_id), fact)
    await store.add_contributions(conn, contributions)
    return contributions


async def _placed(conn: asyncpg.Connection, event: Event, msg: ev.OrderPlaced) -> None:
    await _apply(conn, msg.order_id, msg.member_id,
                 lambda f: orders.placed(f, total=msg.total.amount))


async def _confirmed(conn: asyncpg.Connection, event: Event, msg: ev.OrderConfirmed) -> None:
    at = _when(msg.confirmed_at, event)
    booked = await _apply(conn, msg.order_id, msg.member_id,
                          lambda f: orders.confirmed(f, total=msg.total.amount, at=at))
    if not booked:
        return  # confirmed before (a republished event): its lines are already counted
    await store.add_product_sales(conn, minute_of(at), [
        store.LineSale(
            sku_id=_uuid(line.sku_id),
            product_id=_uuid(line.product_id),
            merchant_id=_maybe_uuid(line.merchant_id),
            category=line.category,
            units=line.quantity,
            gmv=line.line_total,
        )
        for line in msg.lines
    ])
    lag = (datetime.now(UTC) - event.time).total_seconds()
    metrics.CONFIRMATION_TO_GMV.observe(max(lag, 0.0))


async def _cancelled(conn: asyncpg.Connection, event: Event, msg: ev.OrderCancelled) -> None:
    await _apply(conn, msg.order_id, msg.member_id, orders.cancelled)


async def _refunded(conn: asyncpg.Connection, event: Event, msg: ev.OrderRefunded) -> None:
    at = _when(msg.refunded_at, event)
    await _apply(conn, msg.order_id, msg.member_id,
                 lambda f: orders.refunded(f, amount=msg.refunded.amount, at=at))


_ORDER_SUBJECTS: dict[str, SubjectHandler] = {
    "orders.order.placed": _placed,
    "orders.order.confirmed": _confirmed,
    "orders.order.cancelled": _cancelled,
    "orders.order.refunded": _refunded,
}


async def on_order_event(conn: asyncpg.Connection, event: Event) -> None:
    """orders.>: order events feed orders_fact, gmv_minute and product_sales."""
    handler = _ORDER_SUBJECTS.get(event.subject)
    if handler is not None:  # products and stock are not projected yet
        await handler(conn, event, event.message())


async def on_payment_event(conn: asyncpg.Connection, event: Event) -> None:
    """payments.>: every payment event merges into payments_fact."""
    msg: ev.PaymentChanged = event.message()
    status = normalise_status(msg.status, event.subject)
    await store.upsert_payment(
        conn,
        payment_id=_uuid(msg.payment_id),
        order_id=_maybe_uuid(msg.order_id),
        member_id=_maybe_uuid(msg.member_id),
        status=status,
        status_rank=status_rank(status),
        amount=msg.amount.amount,
        captured=msg.captured,
        refunded=msg.refunded,
        decline_code=msg.decline_code,
        at=_when(msg.occurred_at, event),
    )


async def on_membership_event(conn: asyncpg.Connection, event: Event) -> None:
    """membership.>: demographics and tiers into members_dim; points are not projected."""
    if event.subject == "membership.member.registered":
        reg: ev.MemberRegistered = event.message()
        await store.upsert_member(
            conn, member_id=_uuid(reg.member_id), age_band=reg.age_band, region=reg.region,
            gender=reg.gender, registered_at=_when(reg.registered_at, event),
        )
    elif event.subject == "membership.tier.changed":
        change: ev.TierChanged = event.message()
        await store.set_member_tier(
            conn, member_id=_uuid(change.member_id), tier=change.new_tier,
            changed_at=_when(change.changed_at, event),
        )
