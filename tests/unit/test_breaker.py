from __future__ import annotations

import pytest

from services.payments.breaker import BreakerState, CircuitBreaker, Permit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(window_s=30.0, minimum_calls=4, failure_rate=0.5, reset_after_s=10.0,
                          half_open_trials=2, clock=clock)


def call(breaker: CircuitBreaker, subject: str, *, ok: bool) -> None:
    permit = breaker.allow(subject)
    assert permit is not None, f"{subject} refused"
    (breaker.record_success if ok else breaker.record_failure)(permit)


def trip(breaker: CircuitBreaker) -> None:
    """Open it with four distinct failed requests: s0..s3."""
    for i in range(4):
        call(breaker, f"s{i}", ok=False)
    assert breaker.state is BreakerState.OPEN


def cool_down(breaker: CircuitBreaker, clock: Clock) -> None:
    clock.now += breaker.reset_after_s
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_new_breaker_is_closed_and_lets_calls_through(breaker: CircuitBreaker) -> None:
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow("a") == Permit("a")


def test_nothing_is_judged_before_the_minimum_number_of_calls(breaker: CircuitBreaker) -> None:
    for i in range(3):
        call(breaker, f"s{i}", ok=False)
    assert breaker.state is BreakerState.CLOSED


def test_it_opens_when_the_failure_rate_is_reached(breaker: CircuitBreaker) -> None:
    call(breaker, "a", ok=True)
    call(breaker, "b", ok=True)
    call(breaker, "c", ok=False)
    assert breaker.state is BreakerState.CLOSED
    call(breaker, "d", ok=False)  # 2 of 4
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow("e") is None


def test_below_the_failure_rate_it_stays_closed(breaker: CircuitBreaker) -> None:
    for i in range(6):
        call(breaker, f"ok{i}", ok=True)
    for i in range(5):
        call(breaker, f"bad{i}", ok=False)  # 5 of 11
    assert breaker.state is BreakerState.CLOSED


def test_one_request_failing_again_and_again_is_one_failure(breaker: CircuitBreaker) -> None:
    """The issue's case: one slow card's order retried while other cards are answered."""
    for i in range(3):
        call(breaker, f"visa{i}", ok=True)
    for _ in range(20):
        call(breaker, "slow-order", ok=False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["failures"] == 1


def test_failures_leave_the_window(breaker: CircuitBreaker, clock: Clock) -> None:
    for i in range(3):
        call(breaker, f"old{i}", ok=False)
    clock.now += 31
    call(breaker, "a", ok=True)
    call(breaker, "b", ok=True)
    call(breaker, "c", ok=True)
    call(breaker, "d", ok=False)  # 1 of 4 now; the three old ones are out
    assert breaker.state is BreakerState.CLOSED


def test_it_stays_open_until_the_cool_down_has_passed(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after_s() == pytest.approx(0.1)
    assert breaker.allow("new") is None
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_after_s() == 0.0


def test_half_open_lets_a_few_new_requests_through_at_a_time(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    cool_down(breaker, clock)
    first, second = breaker.allow("n1"), breaker.allow("n2")
    assert first is not None and first.trial and not first.repeat
    assert second is not None
    assert breaker.allow("n3") is None  # both trials still out
    breaker.abandon(first)
    assert breaker.allow("n3") is not None


def test_a_good_trial_closes_it_at_once_with_an_empty_window(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    cool_down(breaker, clock)
    call(breaker, "n1", ok=True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["calls"] == 0
    call(breaker, "n2", ok=False)  # the failures that opened it are not held against it
    assert breaker.state is BreakerState.CLOSED


def test_a_failed_new_trial_reopens_it_for_another_cool_down(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    cool_down(breaker, clock)
    call(breaker, "n1", ok=False)
    assert breaker.state is BreakerState.OPEN
    clock.now += 9
    assert breaker.allow("n2") is None
    clock.now += 1
    assert breaker.allow("n2") is not None


def test_a_retry_of_a_failed_request_neither_takes_the_trial_nor_reopens_it(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    """The issue's flapping: every half-open trial was a slow order's retry, which failed."""
    trip(breaker)
    cool_down(breaker, clock)
    retry = breaker.allow("s0")
    assert retry is not None and retry.repeat
    assert breaker.allow("s1") is None  # one repeat at a time
    good = breaker.allow("visa")
    assert good is not None and not good.repeat  # a new request still gets its trial
    breaker.record_failure(retry)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(good)
    assert breaker.state is BreakerState.CLOSED


def test_a_retry_that_succeeds_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    """With nobody else calling, recovery's retries are how the processor is found back."""
    trip(breaker)
    cool_down(breaker, clock)
    call(breaker, "s0", ok=True)
    assert breaker.state is BreakerState.CLOSED


def test_a_trial_of_an_earlier_opening_does_not_free_a_slot_of_this_one(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    cool_down(breaker, clock)
    late = breaker.allow("n1")
    call(breaker, "n2", ok=False)  # reopens
    cool_down(breaker, clock)
    assert breaker.allow("n3") is not None and breaker.allow("n4") is not None
    assert late is not None
    breaker.abandon(late)
    assert breaker.allow("n5") is None


def test_the_snapshot_shows_state_and_failure_rate(breaker: CircuitBreaker) -> None:
    call(breaker, "a", ok=True)
    call(breaker, "b", ok=True)
    call(breaker, "c", ok=True)
    call(breaker, "d", ok=False)
    assert breaker.snapshot() == {
        "state": "closed", "calls": 4, "failures": 1, "failure_rate": 0.25,
        "retry_after_s": 0.0,
    }


@pytest.mark.parametrize(
    ("window", "minimum", "rate", "reset", "trials"),
    [(0, 1, 0.5, 1, 1), (1, 0, 0.5, 1, 1), (1, 1, 0, 1, 1), (1, 1, 1.5, 1, 1),
     (1, 1, 0.5, 0, 1), (1, 1, 0.5, 1, 0)],
)
def test_nonsense_settings_are_refused(
    window: float, minimum: int, rate: float, reset: float, trials: int
) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(window_s=window, minimum_calls=minimum, failure_rate=rate,
                       reset_after_s=reset, half_open_trials=trials)


def test_slow_cards_beside_answered_ones_do_not_open_it(clock: Clock) -> None:
    """Cards that time out while the processor answers others are cards of their own: the
    breaker opens only once nothing has been answered for `alive_s`."""
    breaker = CircuitBreaker(window_s=30.0, minimum_calls=4, failure_rate=0.5,
                             reset_after_s=10.0, alive_s=5.0, clock=clock)
    call(breaker, "good", ok=True)
    for i in range(6):
        clock.now += 0.5
        call(breaker, f"slow{i}", ok=False)
    assert breaker.state is BreakerState.CLOSED  # 6 of 7 failed, but 3 s ago it answered

    clock.now += 2.0
    call(breaker, "slow-late", ok=False)
    assert breaker.state is BreakerState.OPEN  # nothing answered for 5 s: an outage
