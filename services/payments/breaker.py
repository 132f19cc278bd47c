"""A circuit breaker: stop calling a dependency that keeps failing, probe it after a pause.

closed --N consecutive failures--> open --cool-down elapsed--> half_open
half_open --trial succeeds--> closed;  half_open --trial fails--> open (cool-down again)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Not thread-safe; one breaker per event loop (asyncio runs its callers one at a time)."""

    def __init__(
        self, *, failure_threshold: int, reset_after_s: float, clock: Clock = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be ≥ 1, got {failure_threshold}")
        if reset_after_s <= 0:
            raise ValueError(f"reset_after_s must be > 0, got {reset_after_s}")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_after_s
        ):
            self._state = BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when it would now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_after_s - self._clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial call at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        # A failed trial reopens at once; a closed breaker waits for the threshold.
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._open()

    def abandon(self) -> None:
        """The caller gave up before an answer: neither success nor failure; free the trial."""
        self._trial_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_in_flight = False
