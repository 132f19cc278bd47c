"""What analytics does when an event arrives.

Each handler reads and writes per-order state on the connection and queues its bucket
writes on the batch's `Writes`; the caller (batch or per-event) flushes them in the same
transaction as the inbox rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1 import events_pb2 as ev

from services.analytics import store
from services.analytics.domain import orders
from services.analytics.domain.payments import normalise_status, status_rank
from services.analytics.writes import LineSale, Writes
from services.common.events import Event
from services.common.inbox import Handler

Step = Callable[[orders.OrderFact], orders.Outcome]
SubjectHandler = Callable[[asyncpg.Connection, Event, Any, Writes], Awaitable[None]]
BatchHandler = Callable[[asyncpg.Connection, Event, Writes], Awaitable[None]]


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
    conn: asyncpg.Connection, writes: Writes, order_id: str, member_id: str, step: Step,
    at: datetime,
) -> bool:
    """Run one transition on the locked order row; queue what it contributes."""
    oid = _uuid(order_id)
    fact, contributions = step(await writes.order(conn, oid))
    writes.keep_order(oid, _maybe_uuid(member_id), fact)
    writes.contribute(contributions, at)
    return bool(contributions)


async def _placed(conn: asyncpg.Connection, event: Event, msg: ev.OrderPlaced, w: Writes) -> None:
    await _apply(conn, w, msg.order_id, msg.member_id,
                 lambda f: orders.placed(f, total=msg.total.amount), event.time)


async def _confirmed(
    conn: asyncpg.Connection, event: Event, msg: ev.OrderConfirmed, w: Writes
) -> None:
    at = _when(msg.confirmed_at, event)
    booked = await _apply(conn, w, msg.order_id, msg.member_id,
                          lambda f: orders.confirmed(f, total=msg.total.amount, at=at), at)
    if not booked:
        return  # confirmed before (a republished event): its lines are already counted
    w.sell(_uuid(msg.order_id), _maybe_uuid(msg.member_id), at, [
        LineSale(
            sku_id=_uuid(line.sku_id),
            product_id=_uuid(line.product_id),
            merchant_id=_maybe_uuid(line.merchant_id),
            category=line.category,
            units=line.quantity,
            gmv=line.line_total,
        )
        for line in msg.lines
    ])
    w.confirmed_at.append(event.time)


async def _cancelled(
    conn: asyncpg.Connection, event: Event, msg: ev.OrderCancelled, w: Writes
) -> None:
    await _apply(conn, w, msg.order_id, msg.member_id, orders.cancelled, event.time)


async def _refunded(
    conn: asyncpg.Connection, event: Event, msg: ev.OrderRefunded, w: Writes
) -> None:
    at = _when(msg.refunded_at, event)
    in_full = not msg.HasField("refunded_total")  # from before partial refunds: always full
    await _apply(conn, w, msg.order_id, msg.member_id,
                 lambda f: orders.refunded(f, amount=msg.refunded.amount, at=at,
                                           in_full=in_full), at)


async def _merchant(
    conn: asyncpg.Connection, event: Event, msg: ev.MerchantChanged, w: Writes
) -> None:
    w.merge(store.MERGE_MERCHANT, _uuid(msg.merchant_id), msg.name, msg.api_key_hash,
            _when(msg.occurred_at, event))


_ORDER_SUBJECTS: dict[str, SubjectHandler] = {
    "orders.order.placed": _placed,
    "orders.order.confirmed": _confirmed,
    "orders.order.cancelled": _cancelled,
    "orders.order.refunded": _refunded,
    "orders.merchant.created": _merchant,
    "orders.merchant.key_rotated": _merchant,
}


_ORDER_STATE = frozenset(
    {"orders.order.placed", "orders.order.confirmed", "orders.order.cancelled",
     "orders.order.refunded"})


def orders_of(events: Sequence[Event]) -> list[uuid.UUID]:
    """The orders whose state these events change (to lock them all in one go)."""
    return [_uuid(e.message().order_id) for e in events if e.subject in _ORDER_STATE]


async def on_order_event(conn: asyncpg.Connection, event: Event, writes: Writes) -> None:
    """orders.>: orders feed orders_fact and the buckets; merchants feed `merchants`."""
    handler = _ORDER_SUBJECTS.get(event.subject)
    if handler is not None:  # products and stock are not projected
        await handler(conn, event, event.message(), writes)


async def on_payment_event(conn: asyncpg.Connection, event: Event, writes: Writes) -> None:
    """payments.>: every payment event merges into payments_fact."""
    msg: ev.PaymentChanged = event.message()
    status = normalise_status(msg.status, event.subject)
    writes.merge(
        store.MERGE_PAYMENT, _uuid(msg.payment_id), _maybe_uuid(msg.order_id),
        _maybe_uuid(msg.member_id), status, status_rank(status), msg.amount.amount,
        msg.captured, msg.refunded, msg.decline_code, _when(msg.occurred_at, event),
    )


MEMBERSHIP_SUBJECTS = ("membership.member.registered", "membership.tier.changed")


async def on_membership_event(conn: asyncpg.Connection, event: Event, writes: Writes) -> None:
    """membership.>: demographics and tiers into members_dim; points are not projected."""
    if event.subject == "membership.member.registered":
        reg: ev.MemberRegistered = event.message()
        writes.merge(store.MERGE_MEMBER, _uuid(reg.member_id), reg.age_band, reg.region,
                     reg.gender, _when(reg.registered_at, event))
    elif event.subject == "membership.tier.changed":
        change: ev.TierChanged = event.message()
        writes.merge(store.MERGE_TIER, _uuid(change.member_id), change.new_tier,
                     _when(change.changed_at, event))


def per_event(handler: BatchHandler) -> Handler:
    """The handler as the shared inbox runs it: one event, its writes flushed at once."""

    async def apply_one(conn: asyncpg.Connection, event: Event) -> None:
        writes = Writes()
        await handler(conn, event, writes)
        await writes.flush(conn)
        writes.observe_latency(datetime.now(UTC))

    return apply_one
