"""What orders does when another service's event arrives."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from services.common import outbox
from services.common.events import Event
from services.orders import messages, settle
from services.orders.domain.order import OrderStatus
from services.orders.domain.pricing import ENTRY_TIER, TIER_DISCOUNT_BPS
from services.orders.domain.refunds import RefundStep, refund_step
from services.orders.store import members
from services.orders.store import orders as store
from services.orders.store.orders import Order

log = logging.getLogger(__name__)

MEMBERSHIP_SUBJECTS = ("membership.member.registered", "membership.tier.changed")


class NotYetConfirmed(Exception):
    """The refund's order is still PENDING: retry the event later."""


async def on_payment_refunded(conn: asyncpg.Connection, event: Event) -> None:
    """A refund started in payments lands on the order, in part or in full.

    Payments reports running totals, so only what they add beyond the order's `refunded` is
    applied: a duplicate or an older report changes nothing. A partial refund is money only
    (the order stays CONFIRMED, stock unchanged); reaching the whole amount makes it REFUNDED
    with its stock back. Runs in the inbox's transaction; a PENDING order makes the event
    come back later, any other that is not CONFIRMED (e.g. already REFUNDED because the
    member cancelled it through orders) is left as it is.
    """
    msg = event.message()
    try:
        order_id = uuid.UUID(msg.order_id)
    except ValueError:
        log.warning("refund for a malformed order id", extra={"order_id": msg.order_id})
        return
    order = await store.get_order(conn, order_id, for_update=True)
    if order is None:
        log.warning("refund for an unknown order", extra={"order_id": msg.order_id})
        return
    if order.status == OrderStatus.PENDING:
        # Paid but not confirmed yet (its checkout or the recovery loop is about to): the
        # inbox redelivers this later, and confirming takes what payments says it refunded.
        raise NotYetConfirmed(f"order {order_id} is still PENDING; refund applied later")
    if order.status != OrderStatus.CONFIRMED:
        log.info("refund for an order that is not confirmed; unchanged",
                 extra={"order_id": msg.order_id, "status": order.status})
        return
    step = refund_step(total=order.total, refunded_before=order.refunded,
                       reported=msg.refunded, captured=msg.captured)
    if step is None:
        return
    if step.full:
        await settle.mark_refunded(conn, order)
    else:
        await _partial(conn, order, step)


async def _partial(conn: asyncpg.Connection, order: Order, step: RefundStep) -> None:
    if not await store.add_partial_refund(conn, order.id, was=order.refunded,
                                          now=step.refunded_total):
        raise RuntimeError(f"order {order.id} changed under its row lock")
    await outbox.add_event(
        conn, source=settle.SOURCE, subject="orders.order.refunded", aggregate_id=str(order.id),
        message=messages.refunded(order, amount=step.amount, refunded_total=step.refunded_total))


async def on_membership_event(conn: asyncpg.Connection, event: Event) -> None:
    """A registration (the entry tier) or a tier change lands in orders' tier projection.

    Versioned by the time membership stamped on the event, then its stream sequence, so a
    late redelivery of an older change leaves the newer tier in place. A tier the pricing
    rule does not know raises: the event is retried, then dead-lettered where it shows.
    """
    msg = event.message()
    if event.subject == "membership.member.registered":
        tier, at = ENTRY_TIER, _when(msg.registered_at, event)
    else:
        tier, at = msg.new_tier, _when(msg.changed_at, event)
    if tier not in TIER_DISCOUNT_BPS:
        raise ValueError(f"member {msg.member_id}: unknown tier {tier!r}")
    await members.merge_tier(conn, uuid.UUID(msg.member_id), tier=tier, changed_at=at,
                             stream_seq=event.stream_seq)


def _when(stamp: Timestamp, event: Event) -> datetime:
    """The domain time membership stamped, else the envelope's ce-time."""
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else event.time
