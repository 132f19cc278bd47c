from __future__ import annotations

import itertools

import pytest

from services.orders.domain.order import (
    InvalidTransition,
    OrderEvent,
    OrderStatus,
    is_terminal,
    transition,
)

S, E = OrderStatus, OrderEvent

ALLOWED = {
    (S.PENDING, E.PAYMENT_CAPTURED): S.CONFIRMED,
    (S.PENDING, E.PAYMENT_DECLINED): S.CANCELLED,
    (S.PENDING, E.PAYMENT_DEADLINE_PASSED): S.CANCELLED,
    (S.PENDING, E.CANCELLED_BY_MEMBER): S.CANCELLED,
    (S.CONFIRMED, E.REFUNDED): S.REFUNDED,
    (S.CONFIRMED, E.CANCELLED_BY_MEMBER): S.REFUNDED,
}
FORBIDDEN = [pair for pair in itertools.product(S, E) if pair not in ALLOWED]


@pytest.mark.parametrize(("current", "event"), list(ALLOWED))
def test_allowed_moves(current: OrderStatus, event: OrderEvent) -> None:
    assert transition(current, event) is ALLOWED[current, event]


def test_cancelling_a_confirmed_order_refunds_it() -> None:
    assert transition(S.CONFIRMED, E.CANCELLED_BY_MEMBER) is S.REFUNDED


@pytest.mark.parametrize(("current", "event"), FORBIDDEN)
def test_every_other_move_is_refused(current: OrderStatus, event: OrderEvent) -> None:
    with pytest.raises(InvalidTransition) as err:
        transition(current, event)

    assert (err.value.current, err.value.event) == (current, event)
    assert str(current) in str(err.value) and str(event) in str(err.value)


def test_the_message_says_what_is_possible() -> None:
    with pytest.raises(InvalidTransition) as err:
        transition(S.CONFIRMED, E.PAYMENT_CAPTURED)

    assert str(err.value) == (
        "an order that is CONFIRMED cannot take 'payment_captured' "
        "(allowed: cancelled_by_member, refunded)"
    )


def test_the_message_says_a_final_status_is_final() -> None:
    with pytest.raises(InvalidTransition, match="REFUNDED is final"):
        transition(S.REFUNDED, E.REFUNDED)


def test_events_are_accepted_by_their_wire_names() -> None:
    assert transition(S("PENDING"), E("payment_declined")) is S.CANCELLED


@pytest.mark.parametrize(
    ("status", "terminal"),
    [(S.PENDING, False), (S.CONFIRMED, False), (S.CANCELLED, True), (S.REFUNDED, True)],
)
def test_is_terminal(status: OrderStatus, terminal: bool) -> None:
    assert is_terminal(status) is terminal


@pytest.mark.parametrize("status", [s for s in S if is_terminal(s)])
def test_nothing_leaves_a_terminal_status(status: OrderStatus) -> None:
    for event in E:
        with pytest.raises(InvalidTransition):
            transition(status, event)
