from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.analytics.domain import orders
from services.analytics.domain.orders import Contribution, OrderFact
from services.analytics.domain.payments import normalise_status, status_rank
from services.analytics.domain.window import WindowError, minute_of, report_window

T0 = datetime(2025, 11, 11, 0, 0, 30, tzinfo=UTC)
Step = Callable[[OrderFact], orders.Outcome]


def run(steps: list[Step]) -> tuple[OrderFact, Counter[tuple[datetime, str]]]:
    """Apply events in order; sum what each minute bucket received."""
    fact, booked = OrderFact(), Counter[tuple[datetime, str]]()
    for step in steps:
        fact, contributions = step(fact)
        for c in contributions:
            booked[c.minute, "gmv"] += c.gmv
            booked[c.minute, "orders"] += c.orders
            booked[c.minute, "refunds"] += c.refunds
    return fact, +booked


def placed(total: int = 10_000) -> Step:
    return lambda f: orders.placed(f, total=total)


def confirmed(total: int = 10_000, at: datetime = T0) -> Step:
    return lambda f: orders.confirmed(f, total=total, at=at)


def refunded(amount: int, at: datetime, in_full: bool = False) -> Step:
    return lambda f: orders.refunded(f, amount=amount, at=at, in_full=in_full)


def test_minute_of_floors_to_the_utc_minute() -> None:
    beijing = timezone(timedelta(hours=8))
    moment = datetime(2025, 11, 11, 8, 0, 59, 999_999, tzinfo=beijing)
    assert minute_of(moment) == datetime(2025, 11, 11, 0, 0, tzinfo=UTC)


def test_minute_of_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        minute_of(datetime(2025, 11, 11))


def test_first_confirmation_books_gmv_and_one_order_in_its_minute() -> None:
    fact, contributions = orders.confirmed(OrderFact(), total=12_999, at=T0)
    assert contributions == [Contribution(minute_of(T0), gmv=12_999, orders=1)]
    assert fact == OrderFact(status="CONFIRMED", total=12_999, confirmed_at=T0)


def test_a_second_confirmation_books_nothing() -> None:
    fact, _ = orders.confirmed(OrderFact(), total=12_999, at=T0)
    again, contributions = orders.confirmed(fact, total=12_999, at=T0 + timedelta(minutes=5))
    assert contributions == []
    assert again == fact


def test_placed_and_cancelled_orders_book_nothing() -> None:
    fact, booked = run([placed(), lambda f: orders.cancelled(f)])
    assert booked == Counter()
    assert fact.status == "CANCELLED"


def test_refund_books_its_amount_in_its_own_minute() -> None:
    later = T0 + timedelta(minutes=3)
    fact, booked = run([placed(), confirmed(), refunded(4_000, later)])
    assert booked == Counter({
        (minute_of(T0), "gmv"): 10_000,
        (minute_of(T0), "orders"): 1,
        (minute_of(later), "refunds"): 4_000,
    })
    assert fact == OrderFact("CONFIRMED", 10_000, T0, refunded=4_000, refunded_at=later)


def test_partial_refunds_add_up() -> None:
    a, b = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    fact, _ = run([confirmed(), refunded(3_000, b), refunded(2_000, a)])
    assert (fact.refunded, fact.refunded_at) == (5_000, b)


def test_partial_refunds_keep_the_order_confirmed_until_they_reach_its_total() -> None:
    a, b = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    partly, booked = run([confirmed(), refunded(3_000, a)])
    assert (partly.status, partly.refunded) == ("CONFIRMED", 3_000)
    assert booked[minute_of(a), "refunds"] == 3_000

    whole, booked = run([confirmed(), refunded(3_000, a), refunded(7_000, b)])
    assert (whole.status, whole.refunded) == ("REFUNDED", 10_000)
    assert (booked[minute_of(a), "refunds"], booked[minute_of(b), "refunds"]) == (3_000, 7_000)


def test_refunds_that_arrive_before_the_confirmation_are_settled_by_it() -> None:
    a = T0 + timedelta(minutes=1)
    early, _ = run([refunded(4_000, a), refunded(6_000, a)])
    assert early.status == "CONFIRMED"  # the total is not known yet
    fact, _ = run([refunded(4_000, a), refunded(6_000, a), confirmed()])
    assert (fact.status, fact.refunded) == ("REFUNDED", 10_000)


def test_a_refund_from_before_partial_refunds_ends_the_order_whatever_its_amount() -> None:
    later = T0 + timedelta(minutes=3)
    fact, booked = run([confirmed(), refunded(4_000, later, in_full=True)])
    assert (fact.status, fact.refunded) == ("REFUNDED", 4_000)
    assert booked[minute_of(later), "refunds"] == 4_000


def test_a_negative_refund_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        orders.refunded(OrderFact(), amount=-1, at=T0)


def test_late_placed_event_keeps_the_confirmed_total_and_status() -> None:
    fact, _ = run([confirmed(total=9_500), placed(total=10_000)])
    assert (fact.status, fact.total) == ("CONFIRMED", 9_500)


@given(st.data())
def test_any_delivery_order_gives_the_same_state_and_totals(data: st.DataObject) -> None:
    total = data.draw(st.integers(1, 10**9))
    refunds = data.draw(st.lists(st.integers(0, 10**6), max_size=3))
    times = [T0 + timedelta(seconds=data.draw(st.integers(60, 7200))) for _ in refunds]
    steps = [placed(total), confirmed(total), *map(refunded, refunds, times)]
    expected = run(steps)
    shuffled = data.draw(st.permutations(steps))
    assert run(list(shuffled)) == expected


@given(st.data())
def test_partial_refunds_in_any_delivery_order_give_the_same_state_and_totals(
    data: st.DataObject,
) -> None:
    total = data.draw(st.integers(1, 10**6))
    cuts = sorted(data.draw(st.lists(st.integers(1, total), min_size=1, max_size=4,
                                     unique=True)))
    refunds = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    times = [T0 + timedelta(seconds=data.draw(st.integers(60, 7200))) for _ in refunds]
    steps = [placed(total), confirmed(total), *map(refunded, refunds, times)]
    expected = run(steps)
    assert expected[0].status == ("REFUNDED" if cuts[-1] == total else "CONFIRMED")
    shuffled = data.draw(st.permutations(steps))
    assert run(list(shuffled)) == expected


def test_every_permutation_of_a_full_lifecycle_agrees() -> None:
    steps = [placed(), confirmed(), refunded(10_000, T0 + timedelta(hours=1))]
    expected = run(steps)
    assert expected[0].status == "REFUNDED"
    for permutation in itertools.permutations(steps):
        assert run(list(permutation)) == expected


NOW = datetime(2025, 11, 11, 12, 0, tzinfo=UTC)


def test_default_window_is_the_last_hour() -> None:
    assert report_window(None, None, now=NOW) == (NOW - timedelta(hours=1), NOW)


def test_from_alone_runs_to_now_and_to_alone_covers_the_hour_before() -> None:
    start = NOW - timedelta(days=2)
    assert report_window(start, None, now=NOW) == (start, NOW)
    end = NOW - timedelta(days=1)
    assert report_window(None, end, now=NOW) == (end - timedelta(hours=1), end)


def test_window_is_converted_to_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    start, end = report_window(
        datetime(2025, 11, 11, 8, tzinfo=beijing), datetime(2025, 11, 11, 9, tzinfo=beijing),
        now=NOW,
    )
    assert (start, end) == (datetime(2025, 11, 11, 0, tzinfo=UTC), datetime(2025, 11, 11, 1,
                                                                             tzinfo=UTC))
    assert start.tzinfo is UTC


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (NOW, NOW, "from"),
        (NOW, NOW - timedelta(seconds=1), "from"),
        (NOW - timedelta(days=31, seconds=1), NOW, "to"),
        (datetime(2025, 11, 11), NOW, "from"),
        (None, datetime(2025, 11, 11), "to"),
    ],
)
def test_bad_windows_name_the_field(
    start: datetime | None, end: datetime | None, field: str
) -> None:
    with pytest.raises(WindowError) as err:
        report_window(start, end, now=NOW)
    assert err.value.field == field


def test_exactly_31_days_is_allowed() -> None:
    assert report_window(NOW - timedelta(days=31), NOW, now=NOW)[0] == NOW - timedelta(days=31)


@pytest.mark.parametrize(
    ("status", "subject", "expected"),
    [
        ("captured", "payments.payment.captured", "CAPTURED"),
        ("", "payments.payment.failed", "FAILED"),
        ("PARTIALLY_REFUNDED", "payments.payment.refunded", "PARTIALLY_REFUNDED"),
    ],
)
def test_payment_status_falls_back_to_the_subject_verb(
    status: str, subject: str, expected: str
) -> None:
    assert normalise_status(status, subject) == expected


def test_payment_status_only_moves_forward() -> None:
    order = ["AUTHORIZED", "CAPTURED", "PARTIALLY_REFUNDED", "REFUNDED"]
    assert [status_rank(s) for s in order] == sorted(status_rank(s) for s in order)
    assert status_rank("FAILED") > status_rank("AUTHORIZED")
    assert status_rank("VOIDED") > status_rank("AUTHORIZED")
    assert status_rank("SOMETHING_NEW") < status_rank("AUTHORIZED")
