"""Analytics' own Prometheus metrics (the shared ones live in services.common.metrics)."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

CONFIRMATION_TO_GMV = Histogram(
    "marketplace_analytics_confirmation_to_gmv_seconds",
    "From an order's confirmation (ce-time of orders.order.confirmed) to its GMV in the "
    "projection",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LAST_EVENT_AGE = Gauge(
    "marketplace_analytics_last_event_age_seconds",
    "Age (now - ce-time) of the newest event a consumer has applied; grows while it is idle "
    "or stuck, so read it beside marketplace_consumer_lag_messages",
    ["consumer"],
)
