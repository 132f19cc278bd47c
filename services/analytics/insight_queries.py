"""Read-side SQL for one merchant's brand insights (gross: confirmed order lines)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.analytics.domain import kanon
from services.analytics.domain.window import floor_to
from services.analytics.operator_queries import Demographic, Granularity


@dataclass(frozen=True, slots=True)
class Totals:
    gmv: int
    units: int
    orders: int
    buyers: int
    repeat_buyers: int

    @property
    def average_basket(self) -> int | None:
        """The merchant's GMV per order, in fen rounded down."""
        return self.gmv // self.orders if self.orders else None

    @property
    def repeat_purchase_rate(self) -> float | None:
        """Share of the window's buyers who ordered from the merchant more than once in it."""
        return self.repeat_buyers / self.buyers if self.buyers else None


@dataclass(frozen=True, slots=True)
class SalesPoint:
    at: datetime
    gmv: int
    units: int


@dataclass(frozen=True, slots=True)
class SkuRow:
    sku_id: uuid.UUID
    product_id: uuid.UUID
    units: int
    gmv: int


_SCOPE = "merchant_id = $1 AND confirmed_at >= $2 AND confirmed_at < $3"


async def totals(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, start: datetime, end: datetime
) -> Totals:
    row = await conn.fetchrow(
        "WITH per_buyer AS (SELECT member_id, count(DISTINCT order_id) AS orders "
        f"FROM order_lines WHERE {_SCOPE} AND member_id IS NOT NULL GROUP BY member_id) "
        "SELECT coalesce(sum(gmv), 0)::bigint AS gmv, coalesce(sum(units), 0)::bigint AS units, "
        "count(DISTINCT order_id) AS orders, "
        "(SELECT count(*) FROM per_buyer) AS buyers, "
        "(SELECT count(*) FROM per_buyer WHERE orders > 1) AS repeat_buyers "
        f"FROM order_lines WHERE {_SCOPE}",
        merchant_id, start, end,
    )
    assert row is not None  # an aggregate always returns one row
    return Totals(**dict(row))


async def sales(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, start: datetime, end: datetime,
    granularity: Granularity,
) -> list[SalesPoint]:
    rows = await conn.fetch(
        "SELECT date_trunc($4, confirmed_at) AS at, sum(gmv)::bigint AS gmv, "
        f"sum(units)::bigint AS units FROM order_lines WHERE {_SCOPE} GROUP BY 1 ORDER BY 1",
        merchant_id, floor_to(start, granularity), end, granularity,
    )
    return [SalesPoint(**dict(r)) for r in rows]


async def buyers_by(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, start: datetime, end: datetime,
    dimension: Demographic,
) -> list[kanon.Bucket]:
    """Distinct buyers and GMV per group, with groups under k buyers folded (see kanon)."""
    rows = await conn.fetch(
        f"SELECT coalesce(nullif(m.{dimension}, ''), 'unknown') AS group, "
        "count(DISTINCT l.member_id) AS buyers, sum(l.gmv)::bigint AS gmv "
        "FROM order_lines l LEFT JOIN members_dim m ON m.member_id = l.member_id "
        "WHERE l.merchant_id = $1 AND l.confirmed_at >= $2 AND l.confirmed_at < $3 "
        "AND l.member_id IS NOT NULL GROUP BY 1",
        merchant_id, start, end,
    )
    return kanon.fold([kanon.Bucket(**dict(r)) for r in rows])


async def top_skus(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, start: datetime, end: datetime, limit: int
) -> list[SkuRow]:
    rows = await conn.fetch(
        "SELECT sku_id, max(product_id::text)::uuid AS product_id, sum(units)::bigint AS units, "
        f"sum(gmv)::bigint AS gmv FROM order_lines WHERE {_SCOPE} "
        "GROUP BY sku_id ORDER BY sum(gmv) DESC, sku_id LIMIT $4",
        merchant_id, start, end, limit,
    )
    return [SkuRow(**dict(r)) for r in rows]
