"""Read-side SQL for the operator views: series per second or minute, rankings, breakdowns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from services.analytics.domain.payments import SUCCEEDED
from services.analytics.domain.window import floor_to

Granularity = Literal["second", "minute"]
Dimension = Literal["product", "merchant", "category"]
Metric = Literal["gmv", "units"]
Demographic = Literal["region", "age_band", "gender"]

_BUCKETS: dict[str, tuple[str, str]] = {"second": ("gmv_second", "second"),
                                        "minute": ("gmv_minute", "minute")}
_RANK_KEY: dict[str, str] = {"product": "product_id::text", "merchant": "merchant_id::text",
                             "category": "category"}


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket: order money from the GMV buckets, payments by when they were first seen."""

    at: datetime
    gmv: int = 0
    refunds: int = 0
    orders: int = 0
    payment_attempts: int = 0
    payments_succeeded: int = 0


@dataclass(frozen=True, slots=True)
class Ranked:
    key: str
    units: int
    gmv: int


@dataclass(frozen=True, slots=True)
class Group:
    group: str
    orders: int
    gmv: int


async def series(
    conn: asyncpg.Connection, *, start: datetime, end: datetime, granularity: Granularity
) -> list[Point]:
    """Buckets overlapping [start, end) with any order or payment activity, oldest first."""
    table, column = _BUCKETS[granularity]
    first = floor_to(start, granularity)
    money = await conn.fetch(
        f"SELECT {column} AS at, gmv, refunds, orders FROM {table} "
        f"WHERE {column} >= $1 AND {column} < $2",
        first, end,
    )
    pays = await conn.fetch(
        "SELECT date_trunc($3, first_seen_at) AS at, count(*) AS attempts, "
        "count(*) FILTER (WHERE status = ANY($4::text[])) AS succeeded "
        "FROM payments_fact WHERE first_seen_at >= $1 AND first_seen_at < $2 GROUP BY 1",
        first, end, granularity, sorted(SUCCEEDED),
    )
    points = {r["at"]: Point(r["at"], r["gmv"], r["refunds"], r["orders"]) for r in money}
    for r in pays:
        p = points.get(r["at"], Point(r["at"]))
        points[r["at"]] = Point(p.at, p.gmv, p.refunds, p.orders, r["attempts"], r["succeeded"])
    return [points[k] for k in sorted(points)]


async def top(
    conn: asyncpg.Connection, *, start: datetime, end: datetime, by: Dimension, metric: Metric,
    limit: int,
) -> list[Ranked]:
    """Products, merchants or categories by gross GMV or units of confirmed lines."""
    key = _RANK_KEY[by]
    rows = await conn.fetch(
        f"SELECT coalesce({key}, '') AS key, sum(units)::bigint AS units, "
        "sum(gmv)::bigint AS gmv FROM product_sales WHERE minute >= $1 AND minute < $2 "
        f"GROUP BY 1 ORDER BY sum({metric}) DESC, 1 LIMIT $3",
        floor_to(start, "minute"), end, limit,
    )
    return [Ranked(**dict(r)) for r in rows]


async def gmv_by(
    conn: asyncpg.Connection, *, start: datetime, end: datetime, dimension: Demographic
) -> list[Group]:
    """GMV of orders confirmed in [start, end) by the buyer's region, age band or gender."""
    rows = await conn.fetch(
        f"SELECT coalesce(nullif(m.{dimension}, ''), 'unknown') AS group, count(*) AS orders, "
        "sum(o.total)::bigint AS gmv FROM orders_fact o "
        "LEFT JOIN members_dim m ON m.member_id = o.member_id "
        "WHERE o.confirmed_at >= $1 AND o.confirmed_at < $2 GROUP BY 1 ORDER BY 3 DESC, 1",
        floor_to(start, "minute"), end,
    )
    return [Group(**dict(r)) for r in rows]
