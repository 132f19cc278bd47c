"""How payments' running refund totals land on an order: only what they add, once."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from services.orders.domain.refunds import RefundStep, refund_step


def step(*, before: int, reported: int, total: int = 10_000,
         captured: int = 10_000) -> RefundStep | None:
    return refund_step(total=total, refunded_before=before, reported=reported, captured=captured)


def test_a_first_partial_refund_adds_its_amount() -> None:
    assert step(before=0, reported=3_000) == RefundStep(3_000, 3_000, full=False)


def test_a_later_partial_refund_adds_only_the_difference() -> None:
    assert step(before=3_000, reported=4_500) == RefundStep(1_500, 4_500, full=False)


def test_a_duplicate_or_an_older_report_adds_nothing() -> None:
    assert step(before=4_500, reported=4_500) is None
    assert step(before=4_500, reported=3_000) is None
    assert step(before=0, reported=0) is None


def test_reaching_the_total_is_a_full_refund_of_what_was_left() -> None:
    assert step(before=3_000, reported=10_000) == RefundStep(7_000, 10_000, full=True)
    assert step(before=0, reported=10_000) == RefundStep(10_000, 10_000, full=True)


def test_reaching_the_captured_amount_ends_the_order_at_its_total() -> None:
    # Payments captured less than orders believes: the payment is spent, so is the order.
    assert step(before=0, reported=9_000, captured=9_000) == RefundStep(10_000, 10_000, True)


def test_a_full_refund_after_the_order_was_refunded_in_full_adds_nothing() -> None:
    assert step(before=10_000, reported=10_000) is None


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=5, unique=True))
def test_any_arrival_order_of_the_reports_ends_at_the_largest(levels: list[int]) -> None:
    """Payments' totals only grow; whatever order orders sees them in, the sum is the last."""
    for arrival in itertools.islice(itertools.permutations(levels), 24):
        before = 0
        for reported in arrival:
            found = step(before=before, reported=reported)
            if found is not None:
                assert found.amount > 0
                before = found.refunded_total
        assert before == max(levels)
