"""The history generator's copies of its block: the block's orders written again, set-wise
in SQL, once per copy, each copy with members of its own.

A copy changes only identities: every order, payment, refund and member id becomes
`clone_id(id, copy)` (the same rule in Python and in SQL, so the members the simulation
goes on with are the copies' members), journal entries take new numbers from their
sequence, and what payments derives from an order's id (its processor reference and the
request's fingerprint) is derived again. Amounts, times, statuses and lines stay as they
are, so each copy is as consistent as the block (`marketplace audit` checks it). Only the
block's past is copied: it is older than every retention, so it has no outbox, inbox or
stored answers, whose bodies carry the ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

# The loader's working tables, seen by each of its connections: the block's order ids, its
# payments and its journal entries (numbered from 0). Made by `start`, dropped by `finish`.
SCRATCH = "history_load"
BLOCK_TABLE = f"{SCRATCH}.block"


def clone_id(of: uuid.UUID, copy: int) -> uuid.UUID:
    """Copy `copy`'s id for `of` (copy 0 is the block itself)."""
    return of if copy == 0 else uuid.UUID(hashlib.md5(f"{of}:{copy}".encode()).hexdigest())


def _id(column: str) -> str:
    """clone_id in SQL, for copy `c`."""
    return f"md5({column}::text || ':' || c)::uuid"


# The processor's reference (processor._reference("auth", "authorize:<order>")) and the
# sale's fingerprint (AuthorizePayment.fingerprint(), clients._sale's fields), from the copy's
# order id; `o` is the order row.
_REFERENCE = (f"CASE WHEN t.processor_ref IS NULL THEN NULL ELSE 'sim_auth_' || left(encode("
              f"sha256(convert_to('auth:authorize:' || {_id('t.order_id')}, 'UTF8')), 'hex'), 24)"
              " END")
_FINGERPRINT = (
    "encode(sha256(convert_to(concat_ws(chr(31), 'AuthorizePayment', "
    f"{_id('t.order_id')}, {_id('t.member_id')}, t.merchant_id, t.amount, t.currency, "
    f"o.payment_token, 'capture:' || {_id('t.order_id')}), 'UTF8')), 'hex')")
_ENTRY = "$3::bigint + (c - $1) * $4::bigint + k.n"  # the copy's number for entry k


# Per table: what picks the block's rows (joined as k), the order they are written in, and
# each changed column's value (the others are copied as they are).
_PAYMENTS = f"{SCRATCH}.payments"
_ENTRIES = f"{SCRATCH}.entries"
_TABLES: dict[str, tuple[str, str, dict[str, str]]] = {
    "orders.orders": (f"JOIN {BLOCK_TABLE} k ON k.id = t.id", "t.created_at, t.id", {
        "id": _id("t.id"), "member_id": _id("t.member_id"),
        "payment_id": _id("t.payment_id")}),
    "orders.order_lines": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id",
                           "t.order_id, t.line_no", {"order_id": _id("t.order_id")}),
    "payments.payments": (
        f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id JOIN orders.orders o ON o.id = t.order_id",
        "t.created_at, t.id", {
            "id": _id("t.id"), "order_id": _id("t.order_id"), "member_id": _id("t.member_id"),
            "processor_ref": _REFERENCE, "request_hash": _FINGERPRINT}),
    "payments.refunds": (f"JOIN {_PAYMENTS} k ON k.id = t.payment_id", "t.id", {
        "id": _id("t.id"), "payment_id": _id("t.payment_id")}),
    "payments.journal_entries": (f"JOIN {_ENTRIES} k ON k.id = t.id", "t.id", {
        "id": _ENTRY, "payment_id": _id("t.payment_id")}),
    "payments.journal_lines": (f"JOIN {_ENTRIES} k ON k.id = t.entry_id", "t.entry_id", {
        "entry_id": _ENTRY}),
    "membership.points_ledger": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id", "t.id", {
        "member_id": _id("t.member_id"), "order_id": _id("t.order_id")}),
    "membership.member_orders": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id", "t.order_id", {
        "order_id": _id("t.order_id"), "member_id": _id("t.member_id")}),
    "membership.points_reservations": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id",
                                       "t.order_id", {
        "order_id": _id("t.order_id"), "member_id": _id("t.member_id")}),
    "analytics.orders_fact": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id", "t.order_id", {
        "order_id": _id("t.order_id"), "member_id": _id("t.member_id")}),
    "analytics.payments_fact": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id", "t.payment_id", {
        "payment_id": _id("t.payment_id"), "order_id": _id("t.order_id"),
        "member_id": _id("t.member_id")}),
    "analytics.order_lines": (f"JOIN {BLOCK_TABLE} k ON k.id = t.order_id",
                              "t.order_id, t.sku_id", {
        "order_id": _id("t.order_id"), "member_id": _id("t.member_id")}),
}


def statement(table: str, columns: tuple[str, ...]) -> str:
    """The INSERT that writes copies $1 .. $2 of the block's rows of `table`."""
    picks, order, changed = _TABLES[table]
    values = ", ".join(changed.get(c, f"t.{c}") for c in columns)
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} FROM {table} t {picks} "
            f"CROSS JOIN generate_series($1::int, $2::int) AS c ORDER BY c, {order}")


async def start(conn: asyncpg.Connection) -> None:
    """One loader at a time per database (an advisory lock, held by `conn` until it closes);
    the block's order ids are collected as its chunks are written (`add`)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", SCRATCH):
        raise SystemExit("another `marketplace history` is loading into this database: "
                         "wait for it to finish")
    await finish(conn)  # a crashed run's
    await conn.execute(f"CREATE SCHEMA {SCRATCH}")
    await conn.execute(f"CREATE UNLOGGED TABLE {BLOCK_TABLE} (id uuid PRIMARY KEY)")


async def finish(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE")


async def add(conn: asyncpg.Connection, order_ids: list[object]) -> None:
    schema, table = BLOCK_TABLE.split(".")
    await conn.copy_records_to_table(table, schema_name=schema,
                                     records=[(i,) for i in order_ids])


async def copy(conn: asyncpg.Connection, columns: dict[str, tuple[str, ...]], *, copies: int,
               per_transaction: int, connect: Callable[[], Awaitable[asyncpg.Connection]],
               workers: int, done: Callable[[int], None]) -> int:
    """Copies 1 .. copies - 1 of the block, `per_transaction` copies per transaction, on
    `workers` connections of their own at once (each copy's rows are its own: they never
    wait for each other), calling `done(n)` after each transaction with the copies it
    wrote. Returns the rows written."""
    async with conn.transaction():
        await conn.execute(f"ANALYZE {BLOCK_TABLE}")
        await conn.execute(f"CREATE UNLOGGED TABLE {_PAYMENTS} AS SELECT p.id "
                           f"FROM payments.payments p JOIN {BLOCK_TABLE} k ON k.id = p.order_id")
        await conn.execute(f"CREATE UNLOGGED TABLE {_ENTRIES} AS SELECT e.id, "
                           "row_number() OVER (ORDER BY e.id) - 1 AS n "
                           f"FROM payments.journal_entries e JOIN {_PAYMENTS} k "
                           "ON k.id = e.payment_id")
        await conn.execute(f"ANALYZE {_PAYMENTS}")
        await conn.execute(f"ANALYZE {_ENTRIES}")
        entries = await conn.fetchval(f"SELECT count(*) FROM {_ENTRIES}")
        base = await entry_numbers(conn, entries * (copies - 1))  # every copy's, at once
    ranges = [(first, min(first + per_transaction, copies) - 1)
              for first in range(1, copies, per_transaction)]
    statements = [statement(table, columns[table]) for table in _TABLES]
    rows = 0

    async def work() -> None:
        nonlocal rows
        own = await connect()
        try:
            while ranges:
                first, last = ranges.pop(0)
                async with own.transaction():
                    for sql in statements:
                        numbered = ((base + (first - 1) * entries, entries) if "$3" in sql
                                    else ())
                        status = await own.execute(sql, first, last, *numbered)
                        rows += int(status.split()[-1])
                done(last - first + 1)
        finally:
            await own.close()

    await asyncio.gather(*(work() for _ in range(max(1, min(workers, len(ranges))))))
    return rows


async def entry_numbers(conn: asyncpg.Connection, count: int) -> int:
    """The first of `count` journal entry numbers taken at once (the table locked, so that
    nothing else takes one meanwhile)."""
    await conn.execute("LOCK TABLE payments.journal_entries IN SHARE ROW EXCLUSIVE MODE")
    base = await conn.fetchval(
        "SELECT nextval(pg_get_serial_sequence('payments.journal_entries', 'id'))")
    if count > 1:
        await conn.execute("SELECT setval(pg_get_serial_sequence('payments.journal_entries', "
                           "'id'), $1)", base + count - 1)
    return int(base)
