from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.payments.domain.payment import (
    PaymentRuleError,
    PaymentState,
    PaymentStatus,
    authorized,
    capture,
    failed,
    refund,
    void,
)

S = PaymentStatus


def captured(amount: int = 10_000) -> PaymentState:
    return capture(authorized(amount))


def rule_error(code: str, call: Callable[..., PaymentState], *args: object) -> PaymentRuleError:
    with pytest.raises(PaymentRuleError) as err:
        call(*args)
    assert err.value.code == code
    return err.value


def test_a_new_authorization() -> None:
    assert authorized(10_000) == PaymentState(S.AUTHORIZED, 10_000, captured=0, refunded=0)


@pytest.mark.parametrize("amount", [0, -1])
def test_nothing_to_authorize_is_an_invalid_argument(amount: int) -> None:
    rule_error("invalid_argument", authorized, amount)


def test_capture_zero_takes_the_whole_authorization() -> None:
    assert capture(authorized(10_000), 0) == PaymentState(S.CAPTURED, 10_000, captured=10_000)


def test_partial_capture() -> None:
    assert capture(authorized(10_000), 7_500) == PaymentState(S.CAPTURED, 10_000, captured=7_500)


def test_capture_exactly_the_authorization() -> None:
    assert capture(authorized(10_000), 10_000).captured == 10_000


def test_capture_beyond_the_authorization_is_an_invalid_argument() -> None:
    err = rule_error("invalid_argument", capture, authorized(10_000), 10_001)
    assert "only 10000 fen authorized" in err.message


def test_negative_capture_is_an_invalid_argument() -> None:
    rule_error("invalid_argument", capture, authorized(10_000), -1)


def test_a_second_capture_is_a_failed_precondition() -> None:
    err = rule_error("failed_precondition", capture, captured())
    assert err.message == "a CAPTURED payment cannot be captured"


def test_void_releases_an_authorization() -> None:
    assert void(authorized(10_000)) == PaymentState(S.VOIDED, 10_000)


@pytest.mark.parametrize(
    "payment",
    [captured(), void(authorized(100)), failed(100)],
    ids=["captured", "voided", "failed"],
)
def test_only_an_authorization_can_be_voided_or_captured(payment: PaymentState) -> None:
    rule_error("failed_precondition", void, payment)
    rule_error("failed_precondition", capture, payment, 0)


def test_partial_then_exact_remaining_refund() -> None:
    partly = refund(captured(10_000), 3_000)
    assert partly == PaymentState(S.PARTIALLY_REFUNDED, 10_000, captured=10_000, refunded=3_000)

    fully = refund(partly, 7_000)
    assert fully == PaymentState(S.REFUNDED, 10_000, captured=10_000, refunded=10_000)


def test_one_fen_left_is_still_partially_refunded() -> None:
    assert refund(captured(10_000), 9_999).status is S.PARTIALLY_REFUNDED


@given(st.data())
def test_status_follows_what_remains_refundable(data: st.DataObject) -> None:
    amount = data.draw(st.integers(1, 10**9))
    take = data.draw(st.integers(1, amount))
    give = data.draw(st.integers(1, take))

    state = refund(capture(authorized(amount), take), give)

    assert state.status is (S.REFUNDED if give == take else S.PARTIALLY_REFUNDED)
    assert state.refundable == take - give


def test_refund_zero_returns_everything_that_remains() -> None:
    assert refund(refund(captured(10_000), 2_500), 0).refunded == 10_000


def test_refund_is_limited_to_what_was_captured_not_authorized() -> None:
    partial_capture = capture(authorized(10_000), 6_000)

    assert refund(partial_capture).status is S.REFUNDED
    assert refund(partial_capture).refunded == 6_000
    rule_error("invalid_argument", refund, partial_capture, 6_001)


def test_refund_beyond_the_remainder_is_an_invalid_argument() -> None:
    err = rule_error("invalid_argument", refund, refund(captured(10_000), 3_000), 7_001)
    assert err.message == "cannot refund 7001 fen: only 7000 fen of 10000 remain refundable"


def test_negative_refund_is_an_invalid_argument() -> None:
    rule_error("invalid_argument", refund, captured(), -5)


@pytest.mark.parametrize(
    "payment",
    [authorized(100), void(authorized(100)), failed(100), refund(captured(100))],
    ids=["authorized", "voided", "failed", "refunded"],
)
def test_refund_needs_captured_money(payment: PaymentState) -> None:
    rule_error("failed_precondition", refund, payment, 0)


def test_a_state_that_breaks_the_invariant_cannot_exist() -> None:
    with pytest.raises(ValueError, match="refunded ≤ captured"):
        PaymentState(S.PARTIALLY_REFUNDED, 100, captured=50, refunded=60)


operations = st.lists(
    st.tuples(st.sampled_from(["capture", "void", "refund"]), st.integers(-10, 20_000)),
    max_size=20,
)


def apply(state: PaymentState, op: str, amount: int) -> PaymentState:
    if op == "void":
        return void(state)
    return capture(state, amount) if op == "capture" else refund(state, amount)


@given(st.integers(1, 20_000), operations)
def test_no_sequence_of_moves_refunds_more_than_was_captured(
    amount: int, moves: list[tuple[str, int]]
) -> None:
    state = authorized(amount)
    refunded_so_far = 0
    for op, arg in moves:
        try:
            state = apply(state, op, arg)
        except PaymentRuleError as err:
            assert err.code in {"failed_precondition", "invalid_argument"}
        assert 0 <= state.refunded <= state.captured <= state.amount == amount
        assert state.refunded >= refunded_so_far  # money once returned stays returned
        refunded_so_far = state.refunded
        assert (state.status is S.REFUNDED) == (state.captured > 0 and state.refundable == 0)
        assert (state.status is S.PARTIALLY_REFUNDED) == (0 < state.refunded < state.captured)
