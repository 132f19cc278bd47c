"""An order and its lines, its state machine, and why an order is cancelled."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"


class OrderEvent(StrEnum):
    """What happened to an order (the state machine's input)."""

    PAYMENT_CAPTURED = "payment_captured"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_DEADLINE_PASSED = "payment_deadline_passed"
    CANCELLED_BY_MEMBER = "cancelled_by_member"
    REFUNDED = "refunded"


class CancelReason(StrEnum):
    """Why a PENDING order was cancelled: stored as `cancel_reason`, sent in
    `orders.order.cancelled` and shown to the member; the one vocabulary for it."""

    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_TIMEOUT = "payment_timeout"
    PAYMENT_REFUNDED = "payment_refunded"
    POINTS_UNAVAILABLE = "points_unavailable"
    CANCELLED_BY_MEMBER = "cancelled_by_member"

    @property
    def event(self) -> OrderEvent:
        """The state machine's event that cancels for this reason."""
        if self is CancelReason.PAYMENT_TIMEOUT:
            return OrderEvent.PAYMENT_DEADLINE_PASSED
        if self is CancelReason.CANCELLED_BY_MEMBER:
            return OrderEvent.CANCELLED_BY_MEMBER
        return OrderEvent.PAYMENT_DECLINED


@dataclass(frozen=True, slots=True)
class Line:
    sku_id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID
    category: str
    quantity: int
    unit_price: int
    line_total: int


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    member_id: uuid.UUID
    status: str
    subtotal: int
    discount: int
    points_redeemed: int
    total: int
    currency: str
    payment_token: str
    payment_id: uuid.UUID | None
    cancel_reason: CancelReason | None
    idempotency_key: str
    payment_deadline: datetime
    points_pending: bool
    created_at: datetime
    lines: tuple[Line, ...]
    refunded: int = 0  # what payments refunded of `total` (partial refunds keep it CONFIRMED)
    from_cart: bool = False  # checked out from the cart: it claimed those cart lines
    tier: str | None = None  # the member's tier as orders knew it when pricing (None: older)
    discount_bps: int | None = None  # that tier's discount, which priced `discount`


_P, _C = OrderStatus.PENDING, OrderStatus.CONFIRMED

_TRANSITIONS: Mapping[tuple[OrderStatus, OrderEvent], OrderStatus] = MappingProxyType(
    {
        (_P, OrderEvent.PAYMENT_CAPTURED): OrderStatus.CONFIRMED,
        (_P, OrderEvent.PAYMENT_DECLINED): OrderStatus.CANCELLED,
        (_P, OrderEvent.PAYMENT_DEADLINE_PASSED): OrderStatus.CANCELLED,
        (_P, OrderEvent.CANCELLED_BY_MEMBER): OrderStatus.CANCELLED,
        (_C, OrderEvent.REFUNDED): OrderStatus.REFUNDED,
        # A paid order cannot simply be dropped: cancelling it means refunding it.
        (_C, OrderEvent.CANCELLED_BY_MEMBER): OrderStatus.REFUNDED,
    }
)

TERMINAL_STATUSES = frozenset({OrderStatus.CANCELLED, OrderStatus.REFUNDED})


class InvalidTransition(Exception):
    """The event cannot happen to an order in its current status."""

    def __init__(self, current: OrderStatus, event: OrderEvent) -> None:
        self.current = current
        self.event = event
        allowed = allowed_events(current)
        hint = f"allowed: {', '.join(sorted(allowed))}" if allowed else f"{current} is final"
        super().__init__(f"an order that is {current} cannot take '{event}' ({hint})")


def transition(current: OrderStatus, event: OrderEvent) -> OrderStatus:
    """The status after `event`; raise InvalidTransition if the move is impossible."""
    try:
        return _TRANSITIONS[current, event]
    except KeyError:
        raise InvalidTransition(current, event) from None


def allowed_events(current: OrderStatus) -> frozenset[OrderEvent]:
    return frozenset(event for status, event in _TRANSITIONS if status == current)


def is_terminal(status: OrderStatus) -> bool:
    return status in TERMINAL_STATUSES
