"""Events as the producers publish them, for the analytics tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.common.v1 import money_pb2
from marketplace.events.v1 import events_pb2 as ev


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def cny(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount=amount, currency="CNY")


def money(amount: int) -> dict[str, object]:
    """Money as the REST answers show it."""
    return {"amount": amount, "currency": "CNY"}


def placed_order(*, total: int, lines: list[ev.OrderLine] | None = None) -> ev.OrderPlaced:
    """A placed order (a new order id and member) with one line of `total` unless given."""
    return ev.OrderPlaced(
        order_id=str(uuid.uuid4()), member_id=str(uuid.uuid4()),
        lines=lines or [line(total=total)], subtotal=cny(total), discount=cny(0),
        total=cny(total), placed_at=ts(datetime.now(UTC)),
    )


def confirmation(placed: ev.OrderPlaced, *, at: datetime) -> ev.OrderConfirmed:
    return ev.OrderConfirmed(
        order_id=placed.order_id, member_id=placed.member_id, lines=placed.lines,
        total=placed.total, payment_id=str(uuid.uuid4()), confirmed_at=ts(at),
    )


def cancellation(placed: ev.OrderPlaced) -> ev.OrderCancelled:
    return ev.OrderCancelled(
        order_id=placed.order_id, member_id=placed.member_id, reason="payment_declined"
    )


def line(
    *, total: int, quantity: int = 1, product_id: str | None = None, category: str = "phones"
) -> ev.OrderLine:
    return ev.OrderLine(
        sku_id=str(uuid.uuid4()), product_id=product_id or str(uuid.uuid4()),
        merchant_id=str(uuid.uuid4()), category=category, quantity=quantity,
        unit_price=total // quantity, line_total=total,
    )


def refund(
    order_id: str, amount: int, at: datetime, refunded_total: int | None = None
) -> ev.OrderRefunded:
    """One refund of `amount`; with `refunded_total` (the running total) as orders publishes
    it since partial refunds, without it as the older events that were always full refunds."""
    message = ev.OrderRefunded(
        order_id=order_id, refunded=cny(amount), payment_id=str(uuid.uuid4()),
        refunded_at=ts(at),
    )
    if refunded_total is not None:
        message.refunded_total.CopyFrom(cny(refunded_total))
    return message
