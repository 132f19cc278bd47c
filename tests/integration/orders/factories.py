"""Catalog test data written straight into the orders schema (as seeds and merchants would)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class SkuRow:
    id: uuid.UUID
    product_id: uuid.UUID
    price: int
    stock: int


async def merchant(conn: asyncpg.Connection, name: str = "Test Merchant") -> uuid.UUID:
    merchant_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO merchants (id, name, api_key_hash) VALUES ($1, $2, $3)",
        merchant_id, name, uuid.uuid4().hex)
    return merchant_id


async def product(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, *, title: str = "Plain Tee",
    category: str = "apparel", description: str = "", skus: list[tuple[int, int]] | None = None,
    attributes: dict[str, Any] | None = None,
) -> list[SkuRow]:
    """A product with SKUs given as (price in fen, stock); returns the SKUs."""
    product_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO products (id, merchant_id, title, description, category) "
        "VALUES ($1, $2, $3, $4, $5)", product_id, merchant_id, title, description, category)
    rows = []
    for price, stock in skus or [(9_900, 10)]:
        sku = SkuRow(uuid.uuid4(), product_id, price, stock)
        await conn.execute(
            "INSERT INTO skus (id, product_id, attributes, price, stock, initial_stock) "
            "VALUES ($1, $2, $3, $4, $5, $5)",
            sku.id, product_id, '{"colour": "red", "size": "M"}' if attributes is None
            else json.dumps(attributes), price, stock)
        rows.append(sku)
    return rows


async def stock_of(conn: asyncpg.Connection, sku_id: uuid.UUID) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT stock, held, sold, initial_stock, restocked FROM skus WHERE id = $1", sku_id)
    assert row is not None
    return dict(row)


def order_body(*lines: tuple[uuid.UUID, int], token: str = "tok_visa") -> dict[str, Any]:
    return {"items": [{"sku_id": str(s), "quantity": q} for s, q in lines],
            "payment": {"token": token}}
