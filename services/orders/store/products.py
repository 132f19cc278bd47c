"""Merchant writes: merchants and their keys, products with SKUs, restocks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg


async def merchant_by_key_hash(conn: asyncpg.Connection, key_hash: str) -> uuid.UUID | None:
    merchant_id: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM merchants WHERE api_key_hash = $1", key_hash)
    return merchant_id


async def rotate_key(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, *, old_hash: str, new_hash: str
) -> asyncpg.Record | None:
    """Swap the key only if the caller's key is still current (two rotations: one wins)."""
    return await conn.fetchrow(
        "UPDATE merchants SET api_key_hash = $3 WHERE id = $1 AND api_key_hash = $2 "
        "RETURNING id, name", merchant_id, old_hash, new_hash)


async def insert_product(
    conn: asyncpg.Connection, *, merchant_id: uuid.UUID, title: str, description: str,
    category: str, hot: bool, skus: Sequence[tuple[dict[str, str], int, str, int]],
) -> tuple[asyncpg.Record, list[uuid.UUID]]:
    """A product and its SKUs given as (attributes, price, currency, stock)."""
    row = await conn.fetchrow(
        "INSERT INTO products (id, merchant_id, title, description, category, hot) "
        "VALUES ($1, $2, $3, $4, $5, $6) "
        "RETURNING id, merchant_id, title, description, category, hot, created_at",
        uuid.uuid4(), merchant_id, title, description, category, hot)
    assert row is not None
    sku_ids = [uuid.uuid4() for _ in skus]
    await conn.executemany(
        "INSERT INTO skus (id, product_id, attributes, price, currency, stock, initial_stock) "
        "VALUES ($1, $2, $3::jsonb, $4, $5, $6, $6)",
        [(sid, row["id"], attrs, price, cur, stock)  # the pool's jsonb codec encodes
         for sid, (attrs, price, cur, stock) in zip(sku_ids, skus, strict=True)])
    return row, sku_ids


async def own_product(
    conn: asyncpg.Connection, product_id: uuid.UUID, merchant_id: uuid.UUID, *,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """The merchant's product; another merchant's is as missing as an unknown one."""
    return await conn.fetchrow(
        "SELECT id, merchant_id, title, description, category, hot, created_at FROM products "
        "WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if for_update else ""),
        product_id, merchant_id)


async def update_product(
    conn: asyncpg.Connection, product_id: uuid.UUID, changes: dict[str, Any]
) -> asyncpg.Record:
    allowed = ("title", "description", "category", "hot")
    cols = [c for c in allowed if c in changes]
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(cols, start=2))
    row = await conn.fetchrow(
        f"UPDATE products SET {sets}, updated_at = now() WHERE id = $1 "
        "RETURNING id, merchant_id, title, description, category, hot, created_at",
        product_id, *(changes[c] for c in cols))
    assert row is not None
    return row


async def sku_ids_of(conn: asyncpg.Connection, product_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT id FROM skus WHERE product_id = $1 ORDER BY id", product_id)
    return [r["id"] for r in rows]


async def own_sku(
    conn: asyncpg.Connection, sku_id: uuid.UUID, merchant_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT s.id, s.product_id FROM skus s JOIN products p ON p.id = s.product_id "
        "WHERE s.id = $1 AND p.merchant_id = $2", sku_id, merchant_id)


async def categories(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT category AS name, count(*) AS product_count FROM products "
        "GROUP BY category ORDER BY category"))
