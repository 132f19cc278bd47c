"""The flash-sale benchmark's pure parts: which answers are decisions, and their rate."""

from __future__ import annotations

import math

import pytest

from bench.flash import Call, decision_latency_ms, decisions, outcomes_of
from bench.openloop import Outcome


def test_decision_rate_counts_sold_sold_out_refused_and_shed() -> None:
    statuses = [201] * 40 + [409] * 50 + [429] * 5 + [503] * 5 + [500] * 3 + [0] * 2 + [402]
    outcomes = [Outcome(i / 100, 0.010, s) for i, s in enumerate(statuses)]
    rate, counts = decisions(outcomes, 2.0)
    assert rate == pytest.approx(50.0)  # 100 decisions over the 2 s offered
    assert counts == {201: 40, 409: 50, 429: 5, 503: 5, 500: 3, 0: 2, 402: 1}
    assert decisions([], 1.0) == (0.0, {})
    with pytest.raises(ValueError):
        decisions(outcomes, 0)


def test_decision_latency_ignores_errors_and_timeouts() -> None:
    outcomes = [Outcome(i / 100, 0.020, 409) for i in range(99)]
    outcomes += [Outcome(1.0, 10.0, 0), Outcome(1.01, 0.5, 201)]
    p50, p95, p99 = decision_latency_ms(outcomes)
    assert p50 == pytest.approx(20.0)
    assert p95 == pytest.approx(20.0)
    assert p99 == pytest.approx(20.0)
    assert all(math.isnan(v) for v in decision_latency_ms([Outcome(0, 1.0, 500)]))


def test_latency_counts_from_the_intended_send_time() -> None:
    # 10/s; call 0 began on time at t=100, call 3 began 0.2 s late and answered at 100.55.
    calls = [Call(0, 100.0, 100.01, 201), Call(3, 100.5, 100.55, 409)]
    first, late = outcomes_of(calls, 10.0)
    assert first.latency_s == pytest.approx(0.01)
    assert late.due_s == pytest.approx(0.3)
    assert late.latency_s == pytest.approx(0.25)
    assert outcomes_of([], 10.0) == []
