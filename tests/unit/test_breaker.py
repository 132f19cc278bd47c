from __future__ import annotations

import pytest

from services.payments.breaker import BreakerState, CircuitBreaker


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
    return CircuitBreaker(failure_threshold=3, reset_after_s=10.0, clock=clock)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()


def test_a_new_breaker_is_closed_and_lets_calls_through(breaker: CircuitBreaker) -> None:
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_it_opens_after_n_consecutive_failures(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_count_of_failures(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_it_stays_open_until_the_cool_down_has_passed(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after_s() == pytest.approx(0.1)
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_after_s() == 0.0


def test_half_open_lets_one_trial_through_at_a_time(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    clock.now += 10
    assert breaker.allow()
    assert not breaker.allow()  # the trial is still out


def test_a_good_trial_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.allow() and breaker.allow()


def test_a_failed_trial_reopens_it_for_another_cool_down(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_an_abandoned_trial_frees_the_slot_for_another(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    trip(breaker)
    clock.now += 10
    assert breaker.allow()
    breaker.abandon()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, 0.0)])
def test_nonsense_settings_are_refused(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, reset_after_s=reset)
