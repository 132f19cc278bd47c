"""The big screen's figures, computed at most once a second whatever the number of screens."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.analytics.domain.payments import SUCCEEDED
from services.analytics.domain.window import minute_of

DAY = timedelta(hours=24)
CHART_MINUTES = 30
RATE_SECONDS = 10  # orders per second: the average over the last complete seconds
PAYMENT_SPAN = timedelta(minutes=15)
TOP = 5


# The dashboard's statements, each over a window ending now (an index range of the bucket
# or fact tables), never the history before it.
DAY_TOTALS = (
    "SELECT coalesce(sum(gmv), 0)::bigint AS gmv, coalesce(sum(refunds), 0)::bigint AS "
    "refunds, coalesce(sum(orders), 0)::bigint AS orders FROM gmv_minute WHERE minute > $1"
)
RECENT_ORDERS = (
    "SELECT coalesce(sum(orders), 0) FROM gmv_second WHERE second >= $1 AND second < $2"
)
CHART = "SELECT minute, gmv FROM gmv_minute WHERE minute >= $1"
PAYMENT_RATE = (
    "SELECT count(*) AS attempts, count(*) FILTER (WHERE status = ANY($2::text[])) AS ok "
    "FROM payments_fact WHERE first_seen_at >= $1"
)
TOP_PRODUCTS = (
    "SELECT product_id::text AS product_id, max(category) AS category, "
    "sum(units)::bigint AS units, sum(gmv)::bigint AS gmv FROM product_sales "
    "WHERE minute >= $1 GROUP BY product_id ORDER BY sum(gmv) DESC, product_id LIMIT $2"
)


async def snapshot(conn: asyncpg.Connection, now: datetime) -> dict[str, Any]:
    """GMV and orders of the last 24 h, orders/s, the per-minute chart, top products, payments."""
    minute = minute_of(now)
    day = await conn.fetchrow(DAY_TOTALS, minute - DAY)
    this_second = now.replace(microsecond=0)
    recent = await conn.fetchval(
        RECENT_ORDERS, this_second - timedelta(seconds=RATE_SECONDS), this_second)
    first = minute - timedelta(minutes=CHART_MINUTES - 1)
    chart = {r["minute"]: r["gmv"] for r in await conn.fetch(CHART, first)}
    pays = await conn.fetchrow(PAYMENT_RATE, now - PAYMENT_SPAN, sorted(SUCCEEDED))
    top = await conn.fetch(TOP_PRODUCTS, minute - timedelta(hours=1), TOP)
    assert day is not None and pays is not None  # aggregates always return one row
    return {
        "at": now.isoformat().replace("+00:00", "Z"),
        "currency": "CNY",
        "gmv": day["gmv"], "net_gmv": day["gmv"] - day["refunds"], "orders": day["orders"],
        "orders_per_second": int(recent) / RATE_SECONDS,
        "payment_success_rate": pays["ok"] / pays["attempts"] if pays["attempts"] else None,
        "chart": [
            {"minute": (first + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
             "gmv": chart.get(first + timedelta(minutes=i), 0)}
            for i in range(CHART_MINUTES)
        ],
        "top_products": [dict(r) for r in top],
    }


class Broadcaster:
    """Caches the latest snapshot for up to a second; one query round at a time."""

    def __init__(self, pool: asyncpg.Pool, *, max_age_s: float = 0.9) -> None:
        self.pool, self.max_age_s = pool, max_age_s
        self._lock = asyncio.Lock()
        self._latest: dict[str, Any] | None = None
        self._taken_at = 0.0

    async def latest(self) -> dict[str, Any]:
        async with self._lock:
            if self._latest is None or time.monotonic() - self._taken_at > self.max_age_s:
                async with self.pool.acquire() as conn:
                    self._latest = await snapshot(conn, datetime.now(UTC))
                self._taken_at = time.monotonic()
            return self._latest
