"""The JSON shapes clients rely on (Order, Money) and the checkout answer in bytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import Response

from services.common import errors
from services.orders.domain.order import CancelReason, Order, OrderStatus

CHECKOUT_PATH = "/v1/orders"


def money(amount: int, currency: str = "CNY") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def order_json(order: Order) -> dict[str, Any]:
    cur = order.currency
    return {
        "id": str(order.id),
        "member_id": str(order.member_id),
        "status": order.status,
        "items": [
            {
                "sku_id": str(x.sku_id),
                "product_id": str(x.product_id),
                "quantity": x.quantity,
                "unit_price": money(x.unit_price, cur),
                "line_total": money(x.line_total, cur),
            }
            for x in order.lines
        ],
        "subtotal": money(order.subtotal, cur),
        "discount": money(order.discount, cur),
        "points_redeemed": order.points_redeemed,
        "total": money(order.total, cur),
        "refunded": money(order.refunded, cur),
        "payment_id": str(order.payment_id) if order.payment_id else None,
        "cancel_reason": order.cancel_reason,
        "created_at": rfc3339(order.created_at),
    }


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer fixed to the byte, so an idempotent replay can repeat it exactly."""

    status: int
    body: bytes

    @property
    def media_type(self) -> str:
        return errors.PROBLEM_JSON if self.status >= 400 else "application/json"


_CANCELLED = {
    # cancel_reason -> (status, slug, title, detail)
    CancelReason.PAYMENT_DECLINED: (402, "payment-declined", "Payment declined",
                         "the card was declined; the order is cancelled and nothing was charged"),
    CancelReason.PAYMENT_TIMEOUT: (402, "payment-declined", "Payment not completed",
                        "payment did not complete before the deadline; the order is cancelled"),
    CancelReason.POINTS_UNAVAILABLE: (422, "validation-error", "Validation error",
                           "points_to_redeem: the points could not be reserved; order cancelled"),
}
_OTHER_CANCEL = (402, "payment-declined", "Order cancelled",
                 "the order was cancelled before it was paid")


def checkout_reply(order: Order) -> Reply:
    """201 CONFIRMED, 202 PENDING, or a problem with the order in its `order` field."""
    if order.status == OrderStatus.PENDING:
        return Reply(202, orjson.dumps(order_json(order)))
    if order.status == OrderStatus.CANCELLED:
        reason = order.cancel_reason
        status, slug, title, detail = (_CANCELLED.get(reason, _OTHER_CANCEL) if reason
                                       else _OTHER_CANCEL)
        extra: dict[str, Any] = {"order": order_json(order)}
        if slug == "validation-error":
            extra["field"] = "points_to_redeem"
        response = errors.problem_response(
            status, slug, title, detail, instance=CHECKOUT_PATH, **extra)
        return Reply(status, bytes(response.body))
    return Reply(201, orjson.dumps(order_json(order)))


def json_response(data: Any, status_code: int = 200) -> Response:
    """JSON via orjson (FastAPI's ORJSONResponse is deprecated)."""
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")
