"""Merchants, products and SKUs: browsing queries and look-ups for checkout."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.common import db

TS_CONFIG = "english"


@dataclass(frozen=True, slots=True)
class ProductFilter:
    q: str | None = None
    category: str | None = None
    merchant_id: uuid.UUID | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool = False


@dataclass(frozen=True, slots=True)
class NewestKey:
    """Keyset position in the newest-first order."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class RankKey:
    """Keyset position in the relevance order of a text search."""

    rank: float
    id: uuid.UUID


PageKey = NewestKey | RankKey


class _Args:
    """Collects positional parameters while a query is assembled."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _sku_condition(f: ProductFilter, arg: _Args) -> str | None:
    """A product matches the price/stock filters when one of its SKUs does."""
    conds = []
    if f.min_price is not None:
        conds.append(f"s.price >= {arg(f.min_price)}")
    if f.max_price is not None:
        conds.append(f"s.price <= {arg(f.max_price)}")
    if f.in_stock:
        conds.append("s.stock > 0")
    if not conds:
        return None
    return f"EXISTS (SELECT 1 FROM skus s WHERE s.product_id = p.id AND {' AND '.join(conds)})"


async def list_products(
    conn: asyncpg.Connection, *, f: ProductFilter, after: PageKey | None, limit: int
) -> list[asyncpg.Record]:
    """One page (plus one row, to tell whether another page follows) in a stable order."""
    arg = _Args()
    where = ["true"]
    if f.category is not None:
        where.append(f"p.category = {arg(f.category)}")
    if f.merchant_id is not None:
        where.append(f"p.merchant_id = {arg(f.merchant_id)}")
    sku_cond = _sku_condition(f, arg)
    if sku_cond:
        where.append(sku_cond)
    if f.q is not None:
        query = f"websearch_to_tsquery('{TS_CONFIG}', {arg(f.q)})"
        rank = f"ts_rank(p.search, {query})"
        where.append(f"p.search @@ {query}")
        if isinstance(after, RankKey):
            r, i = arg(after.rank), arg(after.id)
            where.append(f"({rank} < {r}::real OR ({rank} = {r}::real AND p.id > {i}))")
        order = f"{rank} DESC, p.id ASC"
    else:
        rank = "0::real"
        if isinstance(after, NewestKey):
            where.append(f"(p.created_at, p.id) < ({arg(after.created_at)}, {arg(after.id)})")
        order = "p.created_at DESC, p.id DESC"
    sql = (
        f"SELECT p.id, p.merchant_id, p.title, p.description, p.category, p.hot, "
        f"p.created_at, {rank} AS rank FROM products p "
        f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {arg(limit + 1)}"
    )
    return list(await conn.fetch(sql, *arg.values))


async def skus_of(
    conn: asyncpg.Connection, product_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT id, product_id, attributes, price, currency, stock FROM skus "
        "WHERE product_id = ANY($1::uuid[]) ORDER BY product_id, price, id",
        product_ids,
    )
    by_product: dict[uuid.UUID, list[asyncpg.Record]] = {pid: [] for pid in product_ids}
    for row in rows:
        by_product[row["product_id"]].append(row)
    return by_product


async def get_product(conn: asyncpg.Connection, product_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, merchant_id, title, description, category, hot, created_at "
        "FROM products WHERE id = $1",
        product_id,
    )


async def skus_for_checkout(
    conn: asyncpg.Connection, sku_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, asyncpg.Record]:
    """Price, ownership and bucketing of each SKU; the caller names any id missing."""
    rows = await db.fetch_by_ids(conn, _SKUS_FOR_CHECKOUT, "s.id", sku_ids)
    return {row["id"]: row for row in rows}


_SKUS_FOR_CHECKOUT = (
    "SELECT s.id, s.product_id, s.price, s.currency, s.bucketed, p.merchant_id, p.category "
    "FROM skus s JOIN products p ON p.id = s.product_id WHERE"
)


async def insert_merchant(
    conn: asyncpg.Connection, *, merchant_id: uuid.UUID, name: str, api_key_hash: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO merchants (id, name, api_key_hash) VALUES ($1, $2, $3) "
        "RETURNING id, name, created_at",
        merchant_id, name, api_key_hash,
    )
    assert row is not None
    return row


async def bucketed_of(
    conn: asyncpg.Connection, sku_ids: list[uuid.UUID]
) -> dict[uuid.UUID, bool]:
    """Whether each existing SKU keeps its stock in buckets (a hot product's SKU)."""
    rows = await conn.fetch("SELECT id, bucketed FROM skus WHERE id = ANY($1::uuid[])", sku_ids)
    return {r["id"]: r["bucketed"] for r in rows}
