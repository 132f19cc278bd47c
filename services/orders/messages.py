"""The protobuf bodies of the events orders publishes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.common.v1.money_pb2 import Money
from marketplace.events.v1 import events_pb2 as ev

from services.orders.domain.order import Order


def _ts(at: datetime | None = None) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at or datetime.now(UTC))
    return stamp


def _money(order: Order, amount: int) -> Money:
    return Money(amount=amount, currency=order.currency)


def _lines(order: Order) -> list[ev.OrderLine]:
    return [
        ev.OrderLine(
            sku_id=str(x.sku_id), product_id=str(x.product_id), merchant_id=str(x.merchant_id),
            category=x.category, quantity=x.quantity, unit_price=x.unit_price,
            line_total=x.line_total,
        )
        for x in order.lines
    ]


def placed(order: Order) -> ev.OrderPlaced:
    return ev.OrderPlaced(
        order_id=str(order.id), member_id=str(order.member_id), lines=_lines(order),
        subtotal=_money(order, order.subtotal), discount=_money(order, order.discount),
        points_redeemed=order.points_redeemed, total=_money(order, order.total),
        placed_at=_ts(order.created_at),
    )


def confirmed(order: Order) -> ev.OrderConfirmed:
    return ev.OrderConfirmed(
        order_id=str(order.id), member_id=str(order.member_id), lines=_lines(order),
        total=_money(order, order.total), payment_id=str(order.payment_id or ""),
        points_redeemed=order.points_redeemed, confirmed_at=_ts(),
    )


def cancelled(order: Order) -> ev.OrderCancelled:
    return ev.OrderCancelled(
        order_id=str(order.id), member_id=str(order.member_id),
        reason=order.cancel_reason or "", cancelled_at=_ts(),
    )


def refunded(order: Order, *, amount: int, refunded_total: int) -> ev.OrderRefunded:
    """One refund: `amount` it gave back, `refunded_total` refunded of the order with it."""
    return ev.OrderRefunded(
        order_id=str(order.id), member_id=str(order.member_id),
        refunded=_money(order, amount), payment_id=str(order.payment_id or ""),
        refunded_at=_ts(), refunded_total=_money(order, refunded_total),
    )


def merchant_changed(merchant_id: uuid.UUID, name: str, api_key_hash: str) -> ev.MerchantChanged:
    return ev.MerchantChanged(merchant_id=str(merchant_id), name=name,
                              api_key_hash=api_key_hash, occurred_at=_ts())


def product_changed(product: Mapping[str, Any], sku_ids: list[uuid.UUID]) -> ev.ProductChanged:
    return ev.ProductChanged(
        product_id=str(product["id"]), merchant_id=str(product["merchant_id"]),
        title=product["title"], category=product["category"], sku_ids=[str(s) for s in sku_ids])


def stock_changed(*, sku_id: uuid.UUID, product_id: uuid.UUID, delta: int, stock: int,
                  reason: str) -> ev.StockChanged:
    return ev.StockChanged(sku_id=str(sku_id), product_id=str(product_id), delta=delta,
                           stock=stock, reason=reason)
