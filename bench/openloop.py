"""Open-loop load, the pure parts: the send schedule, percentiles and a step's summary.

Open loop: request i is due at `start + i / rate` whatever happened to the ones before,
and its latency is measured from that intended time. A slow answer therefore cannot
slow down the arrivals (no coordinated omission): queueing shows up as latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def schedule(rate: float, duration_s: float) -> list[float]:
    """Intended send offsets (seconds from the start) at a constant arrival rate."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    count = math.floor(rate * duration_s + 1e-9)
    return [i / rate for i in range(count)]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Quantile (0..1) of a Prometheus histogram given as cumulative (le, count) pairs.

    Linear interpolation within the bucket, as PromQL's histogram_quantile does; the
    +Inf bucket answers with the highest finite bound. NaN when the histogram is empty.
    """
    finite = sorted((le, c) for le, c in buckets if not math.isinf(le))
    total = max((c for _, c in buckets), default=0.0)
    if total <= 0:
        return math.nan
    target = q * total
    lower, below = 0.0, 0.0
    for le, count in finite:
        if count >= target:
            inside = count - below
            share = (target - below) / inside if inside else 1.0
            return lower + (le - lower) * share
        lower, below = le, count
    return finite[-1][0] if finite else math.nan


@dataclass(frozen=True)
class Outcome:
    """One request: when it was due, how long from then until the answer, and the answer."""

    due_s: float
    latency_s: float
    status: int  # 0: no answer (connection error or client timeout)
    retry_after: bool = False


ACCEPTED = frozenset({200, 201, 202})
# Business answers that are correct behaviour, not errors (declined card, sold out).
EXPECTED = frozenset({402, 409})
SHED = frozenset({429, 503})


@dataclass(frozen=True)
class StepSummary:
    rate: float
    duration_s: float
    sent: int
    confirmed: int  # 201: a checkout that was paid
    ok: int  # 2xx
    expected: int  # 402, 409
    shed: int  # 429, 503
    shed_with_retry_after: int
    errors: int  # anything else, including no answer
    p50_ms: float
    p95_ms: float
    p99_ms: float
    admitted_p99_ms: float  # p99 over everything that was not shed

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s

    @property
    def confirmed_per_s(self) -> float:
        return self.confirmed / self.duration_s

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else 0.0

    @property
    def shed_rate(self) -> float:
        return self.shed / self.sent if self.sent else 0.0


def summarize(rate: float, duration_s: float, outcomes: Iterable[Outcome]) -> StepSummary:
    done = list(outcomes)
    all_ms = [o.latency_s * 1000 for o in done]
    admitted_ms = [o.latency_s * 1000 for o in done if o.status not in SHED]
    shed = [o for o in done if o.status in SHED]
    return StepSummary(
        rate=rate, duration_s=duration_s, sent=len(done),
        confirmed=sum(o.status == 201 for o in done),
        ok=sum(o.status in ACCEPTED for o in done),
        expected=sum(o.status in EXPECTED for o in done),
        shed=len(shed), shed_with_retry_after=sum(o.retry_after for o in shed),
        errors=sum(o.status not in ACCEPTED | EXPECTED | SHED for o in done),
        p50_ms=percentile(all_ms, 50), p95_ms=percentile(all_ms, 95),
        p99_ms=percentile(all_ms, 99), admitted_p99_ms=percentile(admitted_ms, 99),
    )


def best_rate(steps: Sequence[StepSummary], *, p99_ms: float, max_error_rate: float,
              max_shed_rate: float = 0.01) -> float:
    """The highest offered rate served with p99 under the bound, few errors and almost
    nothing shed (a step shedding more than `max_shed_rate` was past capacity, however
    fast its answers); 0 if none."""
    good = [s.rate for s in steps
            if s.p99_ms < p99_ms and s.error_rate <= max_error_rate
            and s.shed_rate <= max_shed_rate]
    return max(good, default=0.0)
