"""Refunds in membership: the running refund, and earned points reversed in proportion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.membership.domain.refunds import points_to_reverse, refunded_after


def test_the_running_total_wins_over_the_amount() -> None:
    assert refunded_after(total=10_000, refunded_before=3_000, amount=2_000,
                          refunded_total=5_000) == 5_000


@pytest.mark.parametrize("late_total", [3_000, 1_000])
def test_a_duplicate_or_an_older_running_total_changes_nothing(late_total: int) -> None:
    assert refunded_after(total=10_000, refunded_before=3_000, amount=late_total,
                          refunded_total=late_total) == 3_000


def test_an_event_without_a_running_total_adds_its_amount_within_the_total() -> None:
    assert refunded_after(total=10_000, refunded_before=0, amount=10_000,
                          refunded_total=None) == 10_000
    assert refunded_after(total=10_000, refunded_before=10_000, amount=10_000,
                          refunded_total=None) == 10_000
    assert refunded_after(total=10_000, refunded_before=0, amount=-5,
                          refunded_total=None) == 0


def test_a_running_total_past_the_order_total_is_capped() -> None:
    assert refunded_after(total=10_000, refunded_before=0, amount=0,
                          refunded_total=12_000) == 10_000


@pytest.mark.parametrize(
    ("earned", "total", "refunded", "reversed_"),
    [
        (150, 15_000, 0, 0),
        (150, 15_000, 5_000, 50),
        (150, 15_000, 4_999, 49),  # rounded down: the member keeps the fraction
        (150, 15_000, 14_999, 149),
        (150, 15_000, 15_000, 150),
        (7, 1_000, 500, 3),
        (0, 50, 50, 0),
    ],
)
def test_points_reversed_are_the_refunded_share_rounded_down(
    earned: int, total: int, refunded: int, reversed_: int
) -> None:
    assert points_to_reverse(points_earned=earned, total=total, refunded=refunded) == reversed_


@given(st.integers(0, 10**6), st.integers(1, 10**9), st.data())
def test_reversals_step_by_step_add_up_to_the_share_of_the_running_refund(
    earned: int, total: int, data: st.DataObject
) -> None:
    levels = sorted(data.draw(st.lists(st.integers(1, total), min_size=1, max_size=5)))
    reversed_ = 0
    for level in levels:
        due = points_to_reverse(points_earned=earned, total=total, refunded=level) - reversed_
        assert due >= 0  # the share never shrinks as refunds grow
        reversed_ += due
    assert reversed_ == earned * levels[-1] // total
    assert points_to_reverse(points_earned=earned, total=total, refunded=total) == earned
