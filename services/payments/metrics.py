"""Payments' own Prometheus metrics (the shared ones live in services.common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

BREAKER_OPEN = Gauge(
    "marketplace_payments_processor_breaker_open",
    "1 while the processor breaker is not closed (open, or half-open letting trials through)",
)
FAILURE_RATIO = Gauge(
    "marketplace_payments_processor_failure_ratio",
    "Share of processor calls that failed in the breaker's window (each request once)",
)
PROCESSOR_CALLS = Counter(
    "marketplace_payments_processor_calls_total", "Card processor calls by operation and outcome",
    ["operation", "outcome"],
)
