"""Analytics' own Prometheus metrics (the shared ones live in services.common.metrics)."""

from __future__ import annotations

from prometheus_client import Histogram

CONFIRMATION_TO_GMV = Histogram(
    "analytics_confirmation_to_gmv_seconds",
    "From an order's confirmation (ce-time of orders.order.confirmed) to its GMV in the "
    "projection",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
