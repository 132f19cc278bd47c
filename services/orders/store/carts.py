"""The member's cart: one line per SKU. A cart checkout claims the lines it was priced from
(`order_id`); claimed lines are out of the cart until their order is cancelled (they come
back) or confirmed (they are deleted)."""

from __future__ import annotations

import uuid

import asyncpg

MAX_LINES = 50


def claim_sql(*, member: str, order: str, lines: str) -> str:
    """Claim for `order` the member's cart lines named in `lines` (a FROM item `w` of
    `sku_id, quantity`), each only while still unclaimed and as it was priced; returns the
    claimed SKUs. The placing statement composes it."""
    return (f"UPDATE cart_items c SET order_id = {order} FROM {lines} "
            f"WHERE c.member_id = {member} AND c.order_id IS NULL "
            "AND c.sku_id = w.sku_id AND c.quantity = w.quantity RETURNING c.sku_id")


class CartFull(Exception):
    """The cart already holds MAX_LINES other SKUs."""


async def items(conn: asyncpg.Connection, member_id: uuid.UUID) -> list[asyncpg.Record]:
    """The lines in the cart: not those claimed by an order still being paid for."""
    return list(await conn.fetch(
        "SELECT c.sku_id, c.quantity, s.price, s.currency FROM cart_items c "
        "JOIN skus s ON s.id = c.sku_id WHERE c.member_id = $1 AND c.order_id IS NULL "
        "ORDER BY c.added_at, c.sku_id",
        member_id))


async def put(
    conn: asyncpg.Connection, member_id: uuid.UUID, sku_id: uuid.UUID, quantity: int
) -> None:
    """Set the SKU's quantity (0 removes it); raises CartFull for a 51st line.

    A line claimed by a checkout is not in the cart: putting its SKU back makes it an
    unclaimed line again, which that order then neither deletes nor gives back.
    """
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
            "ON CONFLICT (member_id, sku_id) DO UPDATE SET quantity = EXCLUDED.quantity, "
            "order_id = NULL",
            member_id, sku_id, quantity)


async def remove(
    conn: asyncpg.Connection, member_id: uuid.UUID, sku_id: uuid.UUID | None
) -> None:
    """One SKU's line, or (None) the whole cart; lines claimed by a checkout stay its own."""
    await conn.execute(
        "DELETE FROM cart_items WHERE member_id = $1 AND order_id IS NULL "
        "AND ($2::uuid IS NULL OR sku_id = $2)",
        member_id, sku_id)
