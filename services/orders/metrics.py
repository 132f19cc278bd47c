"""Orders' own Prometheus metrics (the shared ones live in services.common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

BATCH_SIZE = Histogram(
    "marketplace_orders_batch_size", "Checkouts per batch, by step (look_up, place, pay, settle)",
    ["stage"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
# Counted once per order, by the process whose statement settled it (checkout or recovery).
SETTLED = Counter(
    "marketplace_orders_settled_total",
    "Orders settled: confirmed, or cancelled with their reason (payment_declined, ...)",
    ["status", "reason"],
)
GMV = Counter(
    "marketplace_orders_gmv_minor_units_total",
    "Totals of the orders confirmed, in the currency's minor units (fen for CNY)",
    ["currency"],
)
