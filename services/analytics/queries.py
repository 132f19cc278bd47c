"""Read-side SQL for the reports: windows are [from, to) over UTC minute buckets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.analytics.domain.payments import SUCCEEDED
from services.analytics.domain.window import minute_of


@dataclass(frozen=True, slots=True)
class MinuteRow:
    minute: datetime
    gmv: int
    refunds: int
    orders: int


@dataclass(frozen=True, slots=True)
class GmvReport:
    gmv: int
    refunds: int
    orders: int
    series: list[MinuteRow]

    @property
    def net_gmv(self) -> int:
        return self.gmv - self.refunds


@dataclass(frozen=True, slots=True)
class ProductRow:
    product_id: uuid.UUID
    merchant_id: uuid.UUID | None
    category: str
    units: int
    gmv: int


@dataclass(frozen=True, slots=True)
class PaymentReport:
    attempts: int
    succeeded: int
    failed: int


async def gmv(conn: asyncpg.Connection, *, start: datetime, end: datetime) -> GmvReport:
    """Totals and the per-minute series of every bucket overlapping [start, end)."""
    rows = await conn.fetch(
        "SELECT minute, gmv, refunds, orders FROM gmv_minute "
        "WHERE minute >= $1 AND minute < $2 ORDER BY minute",
        minute_of(start), end,
    )
    series = [MinuteRow(**dict(r)) for r in rows]
    return GmvReport(
        gmv=sum(r.gmv for r in series),
        refunds=sum(r.refunds for r in series),
        orders=sum(r.orders for r in series),
        series=series,
    )


async def top_products(
    conn: asyncpg.Connection, *, start: datetime, end: datetime, limit: int
) -> list[ProductRow]:
    rows = await conn.fetch(
        "SELECT product_id, max(merchant_id::text)::uuid AS merchant_id, "
        "max(category) AS category, sum(units)::bigint AS units, sum(gmv)::bigint AS gmv "
        "FROM product_sales WHERE minute >= $1 AND minute < $2 "
        "GROUP BY product_id ORDER BY sum(gmv) DESC, product_id LIMIT $3",
        minute_of(start), end, limit,
    )
    return [ProductRow(**dict(r)) for r in rows]


async def payments(conn: asyncpg.Connection, *, start: datetime, end: datetime) -> PaymentReport:
    """Payments first seen in [start, end): how many were captured, how many declined."""
    row = await conn.fetchrow(
        "SELECT count(*) AS attempts, "
        "count(*) FILTER (WHERE status = ANY($3::text[])) AS succeeded, "
        "count(*) FILTER (WHERE status = 'FAILED') AS failed "
        "FROM payments_fact WHERE first_seen_at >= $1 AND first_seen_at < $2",
        start, end, sorted(SUCCEEDED),
    )
    assert row is not None  # an aggregate always returns one row
    return PaymentReport(**dict(row))
