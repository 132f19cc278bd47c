"""The order state machine: which event moves an order from which status to which."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"


class OrderEvent(StrEnum):
    """What happened to an order; the cancelling events double as its `cancel_reason`."""

    PAYMENT_CAPTURED = "payment_captured"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_DEADLINE_PASSED = "payment_deadline_passed"
    CANCELLED_BY_MEMBER = "cancelled_by_member"
    REFUNDED = "refunded"


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
