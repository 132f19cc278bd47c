"""The member's cart: one line per SKU, emptied of what a confirmed cart order bought."""

from __future__ import annotations

import uuid

import asyncpg

MAX_LINES = 50


class CartFull(Exception):
    """The cart already holds MAX_LINES other SKUs."""


async def items(conn: asyncpg.Connection, member_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT c.sku_id, c.quantity, s.price, s.currency FROM cart_items c "
        "JOIN skus s ON s.id = c.sku_id WHERE c.member_id = $1 ORDER BY c.added_at, c.sku_id",
        member_id))


async def put(
    conn: asyncpg.Connection, member_id: uuid.UUID, sku_id: uuid.UUID, quantity: int
) -> None:
    """Set the SKU's quantity (0 removes it); raises CartFull for a 51st line."""
    if quantity == 0:
        await remove(conn, member_id, sku_id)
        return
    async with conn.transaction():
        # One member's concurrent PUTs queue here, so the line limit holds.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1::uuid::text))", member_id)
        lines = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE sku_id <> $2) FROM cart_items WHERE member_id = $1",
            member_id, sku_id)
        if lines >= MAX_LINES:
            raise CartFull
        await conn.execute(
            "INSERT INTO cart_items (member_id, sku_id, quantity) VALUES ($1, $2, $3) "
            "ON CONFLICT (member_id, sku_id) DO UPDATE SET quantity = EXCLUDED.quantity",
            member_id, sku_id, quantity)


async def remove(
    conn: asyncpg.Connection, member_id: uuid.UUID, sku_id: uuid.UUID | None
) -> None:
    """One SKU's line, or (None) the whole cart."""
    await conn.execute(
        "DELETE FROM cart_items WHERE member_id = $1 AND ($2::uuid IS NULL OR sku_id = $2)",
        member_id, sku_id)


async def remove_ordered(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    """Inside the confirming transaction: a cart order takes its lines out of the cart."""
    await conn.execute(
        "DELETE FROM cart_items c USING orders o, order_lines l "
        "WHERE o.id = $1 AND o.from_cart AND l.order_id = o.id "
        "AND c.member_id = o.member_id AND c.sku_id = l.sku_id", order_id)
