"""The open-loop generator's pure parts: its clock, percentiles and step summaries."""

from __future__ import annotations

import math

import pytest

from bench.openloop import Outcome, best_rate, histogram_quantile, percentile, schedule, summarize


def test_schedule_is_a_fixed_clock() -> None:
    assert schedule(4, 1) == [0.0, 0.25, 0.5, 0.75]
    sends = schedule(1000, 2.5)
    assert len(sends) == 2500
    assert sends[-1] == pytest.approx(2.499)
    with pytest.raises(ValueError):
        schedule(0, 1)


def test_percentile_by_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 0) == 1
    assert math.isnan(percentile([], 50))


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.95)
    assert math.isnan(histogram_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.99))


def test_latency_counts_from_the_intended_send_time() -> None:
    # 98 fast answers and two that waited behind a stall: the stall shows at p99.
    outcomes = [Outcome(i / 100, 0.010, 201) for i in range(98)]
    outcomes += [Outcome(0.98, 0.900, 201), Outcome(0.99, 0.800, 503, retry_after=True)]
    step = summarize(100, 1.0, outcomes)
    assert (step.sent, step.confirmed, step.shed, step.shed_with_retry_after) == (100, 99, 1, 1)
    assert step.p50_ms == pytest.approx(10.0)
    assert step.p99_ms == pytest.approx(800.0)
    assert step.admitted_p99_ms == pytest.approx(900.0)  # the shed answer is left out
    assert step.errors == 0


def test_best_rate_is_the_highest_rate_within_the_bound() -> None:
    def step(rate: float, latency: float, status: int = 201):  # type: ignore[no-untyped-def]
        return summarize(rate, 1.0, [Outcome(0, latency, status)] * 10)

    steps = [step(50, 0.02), step(100, 0.1), step(200, 0.4), step(150, 0.05, status=0)]
    assert best_rate(steps, p99_ms=150, max_error_rate=0.01) == 100
    assert best_rate([step(50, 0.2)], p99_ms=150, max_error_rate=0.01) == 0.0


def test_best_rate_allows_a_trace_of_shedding_but_not_a_step_past_capacity() -> None:
    def step(rate: float, shed: int):  # type: ignore[no-untyped-def]
        outcomes = [Outcome(0, 0.02, 201)] * (1000 - shed) + [Outcome(0, 0.001, 503)] * shed
        return summarize(rate, 1.0, outcomes)

    # 0.5 % shed: served, as far as a client can tell; 5 % shed: the rate was not sustained.
    assert best_rate([step(100, 5), step(150, 50)], p99_ms=150, max_error_rate=0.01) == 100
    assert best_rate([step(100, 0), step(150, 5)], p99_ms=150, max_error_rate=0.01) == 150
