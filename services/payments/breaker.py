"""A circuit breaker for the card processor: stop calling it while it is down, probe, resume.

What opens it: the share of failed calls over a sliding window (`window_s`, kept in
one-second buckets), judged only once the window holds `minimum_calls` outcomes (the
failure-rate breaker of resilience4j and Polly). Each call names its *subject*, the
request it carries (an authorization's order, a capture's key): only a subject's first
failure is counted. A request that keeps timing out (one slow card, retried by orders'
recovery again and again) says nothing new on its second try, while the processor goes on
answering the other cards; counting each retry would let a handful of slow orders open the
breaker for everyone. Success counts every time: each is fresh news that the processor
answers.

closed --failure rate reached--> open --`reset_after_s`--> half_open
half_open lets through up to `half_open_trials` calls for subjects not known to fail, and one
*repeat* (a subject that failed before) at a time, so that recovery still probes when nobody
else calls. Any success there closes it at once, with an empty window; a fresh trial's
failure reopens it; a repeat's failure only says again what is known and leaves it
half-open. An old slow request can therefore neither take the trial from a good one nor
reopen the breaker.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Clock = Callable[[], float]

# How long, and for how many subjects, a failure is remembered to tell a repeat from a
# fresh request. Longer than any payment deadline; an evicted subject counts as fresh,
# which only errs towards opening.
FAILURE_MEMORY_S = 3600.0
FAILURE_MEMORY_SIZE = 10_000


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; hand it back with its outcome."""

    subject: str
    trial: bool = False  # let through half-open
    repeat: bool = False  # the subject had failed before
    round: int = 0  # which opening of the breaker a trial belongs to


class _Window:
    """Successes and failures per whole second over the last `span_s` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._buckets: deque[list[int]] = deque()  # [second, successes, failures]

    def add(self, now: float, *, failed: bool) -> None:
        self._expire(now)
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        self._buckets[-1][2 if failed else 1] += 1

    def totals(self, now: float) -> tuple[int, int]:
        """(calls, failures) in the window."""
        self._expire(now)
        calls = sum(b[1] + b[2] for b in self._buckets)
        return calls, sum(b[2] for b in self._buckets)

    def clear(self) -> None:
        self._buckets.clear()

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self.span_s - 1:
            self._buckets.popleft()


class CircuitBreaker:
    """Not thread-safe; one breaker per event loop (asyncio runs its callers one at a time)."""

    def __init__(
        self, *, window_s: float, minimum_calls: int, failure_rate: float, reset_after_s: float,
        half_open_trials: int = 3, alive_s: float = 0.0, clock: Clock = time.monotonic,
    ) -> None:  # fmt: skip
        if window_s <= 0 or reset_after_s <= 0:
            raise ValueError(f"window_s and reset_after_s must be > 0, got {window_s}, "
                             f"{reset_after_s}")
        if minimum_calls < 1 or half_open_trials < 1:
            raise ValueError(f"minimum_calls and half_open_trials must be ≥ 1, got "
                             f"{minimum_calls}, {half_open_trials}")
        if not 0 < failure_rate <= 1:
            raise ValueError(f"failure_rate must be within (0, 1], got {failure_rate}")
        self.minimum_calls, self.failure_rate = minimum_calls, failure_rate
        self.reset_after_s, self.half_open_trials = reset_after_s, half_open_trials
        self._clock = clock
        # A processor that answered a card this recently is up: the failures around it are
        # cards of their own (too slow, say), not an outage, and do not open the breaker.
        self.alive_s = alive_s
        self._answered_at = -math.inf
        self._window = _Window(window_s)
        self._failed: OrderedDict[str, float] = OrderedDict()  # subject -> last failure
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._round = 0
        self._trials = self._repeats = 0

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_after_s
        ):
            self._state = BreakerState.HALF_OPEN
        return self._state

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when it would now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_after_s - self._clock())

    def snapshot(self) -> dict[str, Any]:
        """State and recent failure rate, for /readyz and the metrics."""
        calls, failures = self._window.totals(self._clock())
        return {
            "state": str(self.state), "calls": calls, "failures": failures,
            "failure_rate": round(failures / calls, 3) if calls else 0.0,
            "retry_after_s": round(self.retry_after_s(), 1),
        }

    def allow(self, subject: str) -> Permit | None:
        """Leave for a call about `subject` now, or None (refused without calling)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(subject)
        if state is BreakerState.OPEN:
            return None
        repeat = self._known_failure(subject)
        if repeat and self._repeats == 0:
            self._repeats += 1
        elif not repeat and self._trials < self.half_open_trials:
            self._trials += 1
        else:
            return None
        return Permit(subject, trial=True, repeat=repeat, round=self._round)

    def record_success(self, permit: Permit) -> None:
        self._release(permit)
        self._answered_at = self._clock()
        self._failed.pop(permit.subject, None)
        if self.state is BreakerState.HALF_OPEN:
            self._close()
        else:
            self._window.add(self._clock(), failed=False)

    def record_failure(self, permit: Permit) -> None:
        self._release(permit)
        now = self._clock()
        repeat = self._known_failure(permit.subject)
        self._remember_failure(permit.subject, now)
        if self._state is BreakerState.CLOSED:
            if not repeat:
                self._window.add(now, failed=True)
                if self._tripped(now):
                    self._open(now)
        elif permit.trial and not permit.repeat and permit.round == self._round:
            self._open(now)

    def abandon(self, permit: Permit) -> None:
        """The caller gave up before an answer: neither success nor failure; free the slot."""
        self._release(permit)

    def _tripped(self, now: float) -> bool:
        calls, failures = self._window.totals(now)
        return (calls >= self.minimum_calls and failures >= self.failure_rate * calls
                and now - self._answered_at >= self.alive_s)

    def _known_failure(self, subject: str) -> bool:
        failed_at = self._failed.get(subject)
        return failed_at is not None and self._clock() - failed_at <= FAILURE_MEMORY_S

    def _remember_failure(self, subject: str, now: float) -> None:
        self._failed.pop(subject, None)
        self._failed[subject] = now
        while len(self._failed) > FAILURE_MEMORY_SIZE:
            self._failed.popitem(last=False)

    def _release(self, permit: Permit) -> None:
        if not permit.trial or permit.round != self._round:
            return
        if permit.repeat:
            self._repeats -= 1
        else:
            self._trials -= 1

    def _open(self, now: float) -> None:
        self._state, self._opened_at = BreakerState.OPEN, now
        self._new_round()

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        # What opened it is over: judge from here on (resilience4j resets its window too).
        self._window.clear()
        self._new_round()

    def _new_round(self) -> None:
        self._round += 1
        self._trials = self._repeats = 0
