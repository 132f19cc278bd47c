"""Stock counters of SKUs, plain or spread over bucket rows (hot SKUs in a flash sale).

For every SKU `initial_stock + restocked = stock + held + sold` on its `skus` row. A
bucketed SKU also keeps its on-hand units in `sku_stock_buckets`, and `skus.stock` is the
sum of its buckets: both change in the same transaction.

Lock order (steps 3 and 4 of the one in `services.orders.store`, after cart lines): first
bucket rows (by SKU id, one bucket per SKU at a time), then `skus` rows (by SKU id). A buyer who
finds every bucket empty fails without touching the `skus` row, so a sold-out crowd does
not queue on it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence, Set
from typing import Protocol

import asyncpg


class StockLine(Protocol):
    @property
    def sku_id(self) -> uuid.UUID: ...
    @property
    def quantity(self) -> int: ...


class OutOfStock(Exception):
    """A SKU has fewer units on hand than a line asks for."""

    def __init__(self, sku_id: uuid.UUID, quantity: int, available: int | None = None) -> None:
        super().__init__(f"SKU {sku_id} has fewer than {quantity} units in stock")
        self.sku_id, self.quantity, self.available = sku_id, quantity, available


MAX_ON_HAND = 2_147_483_647  # skus.stock (and every bucket) is a Postgres integer


class TooMuchStock(Exception):
    """A restock would let on-hand stock pass what its column holds."""

    def __init__(self, sku_id: uuid.UUID, quantity: int, room: int) -> None:
        super().__init__(f"SKU {sku_id} has room for {room} more units, not {quantity}")
        self.sku_id, self.quantity, self.room = sku_id, quantity, room


class StaleHotness(Exception):
    """A SKU's bucketing is not what the caller remembered: roll back and ask again."""


def _by_sku(lines: Sequence[StockLine]) -> list[StockLine]:
    return sorted(lines, key=lambda line: line.sku_id)


async def _bucketed(conn: asyncpg.Connection, lines: Sequence[StockLine]) -> set[uuid.UUID]:
    rows = await conn.fetch("SELECT id FROM skus WHERE id = ANY($1::uuid[]) AND bucketed",
                            [line.sku_id for line in lines])
    return {r["id"] for r in rows}


_TAKE_UNLOCKED = (
    "UPDATE sku_stock_buckets SET stock = stock - $2 "
    "WHERE (sku_id, bucket) = (SELECT sku_id, bucket FROM sku_stock_buckets "
    "  WHERE sku_id = $1 AND stock >= $2 ORDER BY (bucket + $3) % 1024 "
    "  LIMIT 1 FOR UPDATE SKIP LOCKED) AND stock >= $2 RETURNING bucket")
_TAKE_FROM = ("UPDATE sku_stock_buckets SET stock = stock - $3 "
              "WHERE sku_id = $1 AND bucket = $2 AND stock >= $3 RETURNING bucket")


class _Missed(Exception):
    """Nothing taken in this attempt; its savepoint is rolled back."""


async def _attempt(conn: asyncpg.Connection, sql: str, *args: object) -> bool:
    """Run one taking statement in a savepoint, undone (row locks too) when it takes nothing.

    A locking statement whose re-check fails keeps its row lock until the end of the
    transaction; without the savepoint such stray locks, taken in any order, deadlock.
    """
    try:
        async with conn.transaction():
            if await conn.fetchval(sql, *args) is None:
                raise _Missed
    except _Missed:
        return False
    return True


async def _take(conn: asyncpg.Connection, sku_id: uuid.UUID, quantity: int) -> None:
    """Take units from one bucket: a free one first, then wait on busy ones in bucket order."""
    if await _attempt(conn, _TAKE_UNLOCKED, sku_id, quantity, random.randrange(1024)):
        return
    rows = await conn.fetch("SELECT bucket FROM sku_stock_buckets WHERE sku_id = $1 "
                            "AND stock >= $2 ORDER BY bucket", sku_id, quantity)
    for row in rows:
        if await _attempt(conn, _TAKE_FROM, sku_id, row["bucket"], quantity):
            return
    await _take_across(conn, sku_id, quantity)


async def _take_across(conn: asyncpg.Connection, sku_id: uuid.UUID, quantity: int) -> None:
    """No single bucket has enough: take from several, or fail with what is left."""
    rows = await conn.fetch(
        "SELECT bucket, stock FROM sku_stock_buckets WHERE sku_id = $1 "
        "ORDER BY bucket FOR UPDATE", sku_id)
    if not rows and not await conn.fetchval("SELECT bucketed FROM skus WHERE id = $1", sku_id):
        raise StaleHotness(f"SKU {sku_id} is not bucketed")
    available = sum(r["stock"] for r in rows)
    if available < quantity:
        raise OutOfStock(sku_id, quantity, available)
    left = quantity
    for r in rows:
        part = min(left, r["stock"])
        if part:
            await conn.execute(_TAKE_FROM, sku_id, r["bucket"], part)
            left -= part
        if not left:
            return


async def _give(conn: asyncpg.Connection, sku_id: uuid.UUID, quantity: int) -> None:
    """Put units back into one bucket, a free one if there is one."""
    done = await conn.fetchval(
        "UPDATE sku_stock_buckets SET stock = stock + $2 "
        "WHERE (sku_id, bucket) = (SELECT sku_id, bucket FROM sku_stock_buckets "
        "  WHERE sku_id = $1 ORDER BY stock LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING true",
        sku_id, quantity)
    if not done:
        await conn.execute(
            "UPDATE sku_stock_buckets SET stock = stock + $2 WHERE sku_id = $1 AND bucket = "
            "(SELECT min(bucket) FROM sku_stock_buckets WHERE sku_id = $1)", sku_id, quantity)


async def reserve(
    conn: asyncpg.Connection, lines: Sequence[StockLine], *, hot: Set[uuid.UUID] | None = None
) -> None:
    """Move units from on hand to held; raises OutOfStock (the caller rolls back).

    `hot`: the bucketed SKUs among the lines as the caller remembers them (saves a query);
    when that is out of date this raises StaleHotness, and the caller retries without it.
    """
    ordered = _by_sku(lines)
    if hot is None:
        hot = await _bucketed(conn, ordered)
    for line in ordered:
        if line.sku_id in hot:
            await _take(conn, line.sku_id, line.quantity)
    for line in ordered:
        if line.sku_id in hot:  # the bucket already checked there is enough
            sql = ("UPDATE skus SET stock = stock - $2, held = held + $2, updated_at = now() "
                   "WHERE id = $1 AND bucketed RETURNING stock")
        else:
            sql = ("UPDATE skus SET stock = stock - $2, held = held + $2, updated_at = now() "
                   "WHERE id = $1 AND stock >= $2 AND NOT bucketed RETURNING stock")
        if await conn.fetchval(sql, line.sku_id, line.quantity) is None:
            row = await conn.fetchrow("SELECT stock, bucketed FROM skus WHERE id = $1",
                                      line.sku_id)
            if row is not None and row["bucketed"] != (line.sku_id in hot):
                raise StaleHotness(f"SKU {line.sku_id} bucketing changed")
            raise OutOfStock(line.sku_id, line.quantity, row["stock"] if row else None)


async def _move(conn: asyncpg.Connection, lines: Sequence[StockLine], sql: str,
                *, to_hand: bool) -> None:
    ordered = _by_sku(lines)
    if to_hand:
        hot = await _bucketed(conn, ordered)
        for line in ordered:
            if line.sku_id in hot:
                await _give(conn, line.sku_id, line.quantity)
    for line in ordered:
        if not await conn.fetchval(sql, line.sku_id, line.quantity):
            raise RuntimeError(f"stock counters of SKU {line.sku_id} disagree with its orders")


async def refill(conn: asyncpg.Connection, lines: Sequence[StockLine]) -> set[uuid.UUID]:
    """Put a cancelled order's units of bucketed SKUs back into their buckets, before the
    settling statement moves them on the SKU rows; returns those SKUs."""
    ordered = _by_sku(lines)
    hot = await _bucketed(conn, ordered)
    for line in ordered:
        if line.sku_id in hot:
            await _give(conn, line.sku_id, line.quantity)
    return hot


async def return_sold(conn: asyncpg.Connection, lines: Sequence[StockLine]) -> None:
    """A CONFIRMED order is refunded: its sold units go back on hand."""
    await _move(conn, lines, (
        "UPDATE skus SET stock = stock + $2, sold = sold - $2, updated_at = now() "
        "WHERE id = $1 AND sold >= $2 RETURNING true"), to_hand=True)


def shares(quantity: int, buckets: int) -> list[int]:
    """`quantity` split over `buckets` as evenly as whole units allow."""
    base, extra = divmod(quantity, buckets)
    return [base + (1 if b < extra else 0) for b in range(buckets)]


async def restock(conn: asyncpg.Connection, sku_id: uuid.UUID, quantity: int) -> int | None:
    """Add units on hand (spread over the buckets of a hot SKU); the new stock, or None.

    Raises TooMuchStock rather than letting the integer column overflow. Held units count
    as on hand here, since a cancelled order puts them back.
    """
    rows = await conn.fetch("SELECT bucket FROM sku_stock_buckets WHERE sku_id = $1 "
                            "ORDER BY bucket FOR UPDATE", sku_id)
    could_hold = await conn.fetchval(
        "SELECT stock::bigint + held FROM skus WHERE id = $1 FOR UPDATE", sku_id)
    if could_hold is not None and could_hold > MAX_ON_HAND - quantity:
        raise TooMuchStock(sku_id, quantity, max(MAX_ON_HAND - could_hold, 0))
    if rows:
        await conn.executemany(
            "UPDATE sku_stock_buckets SET stock = stock + $3 WHERE sku_id = $1 AND bucket = $2",
            [(sku_id, r["bucket"], part) for r, part in zip(rows, shares(quantity, len(rows)),
                                                              strict=True) if part])
    stock: int | None = await conn.fetchval(
        "UPDATE skus SET stock = stock + $2, restocked = restocked + $2, updated_at = now() "
        "WHERE id = $1 AND bucketed = $3 RETURNING stock", sku_id, quantity, bool(rows))
    return stock


async def set_bucketed(conn: asyncpg.Connection, sku_id: uuid.UUID, *, buckets: int) -> None:
    """Spread a SKU's on-hand stock over `buckets` rows (0: gather it back onto the SKU)."""
    current = await conn.fetch("SELECT bucket, stock FROM sku_stock_buckets WHERE sku_id = $1 "
                               "ORDER BY bucket FOR UPDATE", sku_id)
    stock = await conn.fetchval("SELECT stock FROM skus WHERE id = $1 FOR UPDATE", sku_id)
    if stock is None or bool(current) == (buckets > 0):
        return
    if current:
        await conn.execute("DELETE FROM sku_stock_buckets WHERE sku_id = $1", sku_id)
    else:
        await conn.executemany(
            "INSERT INTO sku_stock_buckets (sku_id, bucket, stock) VALUES ($1, $2, $3)",
            [(sku_id, b, part) for b, part in enumerate(shares(stock, buckets))])
    await conn.execute("UPDATE skus SET bucketed = $2 WHERE id = $1", sku_id, buckets > 0)


async def bucket_all_hot(conn: asyncpg.Connection, *, buckets: int) -> int:
    """Spread every SKU of a hot product that is not bucketed yet (after a bulk load)."""
    rows = await conn.fetch(
        "SELECT s.id FROM skus s JOIN products p ON p.id = s.product_id "
        "WHERE p.hot AND NOT s.bucketed ORDER BY s.id")
    for r in rows:
        await set_bucketed(conn, r["id"], buckets=buckets)
    return len(rows)
