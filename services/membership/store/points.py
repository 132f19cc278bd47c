"""The points ledger, points reservations and the confirmed orders membership applied."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    member_id: uuid.UUID
    delta: int
    balance_after: int
    reason: str
    order_id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: uuid.UUID
    member_id: uuid.UUID | None
    points: int
    status: str


@dataclass(frozen=True, slots=True)
class MemberOrder:
    order_id: uuid.UUID
    member_id: uuid.UUID
    total: int
    refunded: int
    tier_at_order: str
    points_earned: int


@dataclass(frozen=True, slots=True)
class Posting:
    """A ledger entry worked out by the caller, who holds the member row lock."""

    member_id: uuid.UUID
    delta: int
    balance_after: int
    reason: str
    order_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ConfirmedOrder:
    order_id: uuid.UUID
    member_id: uuid.UUID
    total: int
    tier_at_order: str
    points_earned: int
    confirmed_at: datetime


async def post(
    conn: asyncpg.Connection,
    *,
    member_id: uuid.UUID,
    delta: int,
    reason: str,
    order_id: uuid.UUID,
    refunded_total: int = 0,
) -> int | None:
    """Change the balance by `delta` with its ledger entry; None if it was applied before.

    An entry is unique per (order, reason, refunded_total): `refunded_total` is the order's
    running refund a `reverse` answers (several per order), 0 for every other reason.
    The caller holds the member row lock (SELECT ... FOR UPDATE), so balance_after is exact.
    """
    balance = await conn.fetchval(
        """
        WITH entry AS (
            INSERT INTO points_ledger (member_id, delta, balance_after, reason, order_id,
                                       refunded_total)
            SELECT id, $2, points_balance + $2, $3, $4, $5 FROM members WHERE id = $1
            ON CONFLICT (order_id, reason, refunded_total) DO NOTHING
            RETURNING member_id, balance_after
        )
        UPDATE members SET points_balance = entry.balance_after
        FROM entry WHERE members.id = entry.member_id
        RETURNING members.points_balance
        """,
        member_id, delta, reason, order_id, refunded_total,
    )
    return None if balance is None else int(balance)


async def append(conn: asyncpg.Connection, postings: Sequence[Posting]) -> None:
    """Add ledger entries in the order given, in one statement; the balances are the
    caller's to store. An entry applied before violates the ledger's unique key and fails
    the statement (`post` is the one that skips it)."""
    if not postings:
        return
    await conn.execute(
        "INSERT INTO points_ledger (member_id, delta, balance_after, reason, order_id) "
        "SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::uuid[])",
        [p.member_id for p in postings], [p.delta for p in postings],
        [p.balance_after for p in postings], [p.reason for p in postings],
        [p.order_id for p in postings],
    )


async def ledger_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    member_id: uuid.UUID,
    *,
    limit: int,
    before_id: int | None,
) -> list[LedgerEntry]:
    """Newest first; `before_id` continues after the last entry of the previous page."""
    records = await conn.fetch(
        "SELECT id, member_id, delta, balance_after, reason, order_id, created_at "
        "FROM points_ledger WHERE member_id = $1 AND ($2::bigint IS NULL OR id < $2) "
        "ORDER BY id DESC LIMIT $3",
        member_id, before_id, limit,
    )
    return [LedgerEntry(**dict(r)) for r in records]


async def points_reversed(conn: asyncpg.Connection, order_id: uuid.UUID) -> int:
    """Earned points of the order taken back so far, over all its `reverse` entries."""
    taken = await conn.fetchval(
        "SELECT coalesce(-sum(delta), 0) FROM points_ledger "
        "WHERE order_id = $1 AND reason = 'reverse'",
        order_id,
    )
    return int(taken)


async def reservation(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False
) -> Reservation | None:
    lock = " FOR UPDATE" if for_update else ""
    record = await conn.fetchrow(
        f"SELECT order_id, member_id, points, status FROM points_reservations "
        f"WHERE order_id = $1{lock}",
        order_id,
    )
    return Reservation(**dict(record)) if record is not None else None


async def insert_reservation(
    conn: asyncpg.Connection,
    *,
    order_id: uuid.UUID,
    member_id: uuid.UUID | None,
    points: int,
    status: str,
) -> bool:
    """False if the order already has a reservation (a concurrent call won)."""
    inserted = await conn.fetchval(
        "INSERT INTO points_reservations (order_id, member_id, points, status) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING RETURNING true",
        order_id, member_id, points, status,
    )
    return bool(inserted)


async def set_reservation_status(
    conn: asyncpg.Connection, order_id: uuid.UUID, status: str
) -> None:
    await conn.execute(
        "UPDATE points_reservations SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id, status,
    )


async def insert_order(
    conn: asyncpg.Connection,
    *,
    order_id: uuid.UUID,
    member_id: uuid.UUID,
    total: int,
    tier_at_order: str,
    points_earned: int,
    confirmed_at: datetime,
) -> bool:
    """False if this order's confirmation was applied before."""
    inserted = await conn.fetchval(
        "INSERT INTO member_orders (order_id, member_id, total, tier_at_order, points_earned, "
        "confirmed_at) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (order_id) DO NOTHING RETURNING true",
        order_id, member_id, total, tier_at_order, points_earned, confirmed_at,
    )
    return bool(inserted)


async def insert_orders(conn: asyncpg.Connection, orders: Sequence[ConfirmedOrder]) -> int:
    """Insert confirmed orders in one statement; how many were new (the others were
    confirmed before and are left as they are)."""
    rows = await conn.fetch(
        "INSERT INTO member_orders (order_id, member_id, total, tier_at_order, points_earned, "
        "confirmed_at) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], "
        "$5::bigint[], $6::timestamptz[]) ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        [o.order_id for o in orders], [o.member_id for o in orders], [o.total for o in orders],
        [o.tier_at_order for o in orders], [o.points_earned for o in orders],
        [o.confirmed_at for o in orders],
    )
    return len(rows)


async def order(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False
) -> MemberOrder | None:
    lock = " FOR UPDATE" if for_update else ""
    record = await conn.fetchrow(
        f"SELECT order_id, member_id, total, refunded, tier_at_order, points_earned "
        f"FROM member_orders WHERE order_id = $1{lock}",
        order_id,
    )
    return MemberOrder(**dict(record)) if record is not None else None


async def add_refunded(conn: asyncpg.Connection, order_id: uuid.UUID, amount: int) -> None:
    await conn.execute(
        "UPDATE member_orders SET refunded = refunded + $2, refunded_at = now() "
        "WHERE order_id = $1",
        order_id, amount,
    )
