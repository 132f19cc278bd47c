"""Orders, their lines and the stock they hold, sold or give back."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.orders.domain.order import CancelReason, Line, Order
from services.orders.store.stock import return_sold  # noqa: F401  (re-exported)

ORDER_COLUMNS = (
    "id, member_id, status, subtotal, discount, points_redeemed, total, currency, "
    "payment_token, payment_id, cancel_reason, idempotency_key, payment_deadline, "
    "points_pending, created_at, refunded, from_cart, tier, discount_bps"
)


# The statements of the order view, the order list and recovery: each reads a bounded
# number of rows through an index whatever the history (tests/integration/
# test_hot_path_plans.py checks their plans against a large table).
LINES = (
    "SELECT order_id, sku_id, product_id, merchant_id, category, quantity, unit_price, "
    "line_total FROM order_lines WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line_no"
)
GET = (f"SELECT {ORDER_COLUMNS} FROM orders "
       "WHERE id = $1 AND ($2::uuid IS NULL OR member_id = $2)")
# Keyset pagination on orders_member_newest: a page costs the same at any depth.
LIST_FIRST = (f"SELECT {ORDER_COLUMNS} FROM orders WHERE member_id = $1 "
              "ORDER BY created_at DESC, id DESC LIMIT $2")
LIST_AFTER = (f"SELECT {ORDER_COLUMNS} FROM orders WHERE member_id = $1 "
              "AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4")
POINTS_DUE = "SELECT id, status FROM orders WHERE points_pending ORDER BY updated_at LIMIT $1"


async def _lines(conn: asyncpg.Connection, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    rows = await conn.fetch(LINES, order_ids)
    lines: dict[uuid.UUID, list[Line]] = {oid: [] for oid in order_ids}
    for r in rows:
        lines[r["order_id"]].append(Line(**{k: r[k] for k in Line.__slots__}))
    return lines


async def _hydrate(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Order]:
    lines = await _lines(conn, [r["id"] for r in rows])
    return [Order(**(dict(r) | {"cancel_reason": _reason(r["cancel_reason"])}),
                  lines=tuple(lines[r["id"]])) for r in rows]


def _reason(stored: str | None) -> CancelReason | None:
    return CancelReason(stored) if stored else None


async def get_order(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, member_id: uuid.UUID | None = None,
    for_update: bool = False,
) -> Order | None:
    """The order; with `member_id`, only if it is that member's."""
    row = await conn.fetchrow(GET + (" FOR UPDATE" if for_update else ""), order_id, member_id)
    return (await _hydrate(conn, [row]))[0] if row else None


async def list_orders(
    conn: asyncpg.Connection, *, member_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None, limit: int,
) -> list[Order]:
    """The member's orders newest first, one row more than `limit`."""
    if after is None:
        rows = await conn.fetch(LIST_FIRST, member_id, limit + 1)
    else:
        rows = await conn.fetch(LIST_AFTER, member_id, after[0], after[1], limit + 1)
    return await _hydrate(conn, list(rows))


async def change_status(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, was: str, now: str,
    payment_id: uuid.UUID | None = None, cancel_reason: str | None = None,
    points_pending: bool = False, refunded: int | None = None,
) -> bool:
    """Compare-and-set the status; False when the order was no longer `was`."""
    done = await conn.fetchval(
        "UPDATE orders SET status = $3, payment_id = coalesce($4, payment_id), "
        "cancel_reason = coalesce($5, cancel_reason), points_pending = points_pending OR $6, "
        "refunded = coalesce($7, refunded), updated_at = now() "
        "WHERE id = $1 AND status = $2 RETURNING true",
        order_id, was, now, payment_id, cancel_reason, points_pending, refunded,
    )
    return bool(done)


async def add_partial_refund(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, was: int, now: int
) -> bool:
    """Compare-and-set a CONFIRMED order's running refund; False if either changed meanwhile."""
    done = await conn.fetchval(
        "UPDATE orders SET refunded = $3, updated_at = now() "
        "WHERE id = $1 AND status = 'CONFIRMED' AND refunded = $2 RETURNING true",
        order_id, was, now,
    )
    return bool(done)


# The next look at a claimed order: base * 2^attempts, capped, times a jitter in [0.5, 1)
# so that orders failing together spread out; never past the payment deadline, when the
# order is to be cancelled; and never sooner than the lease, which keeps other replicas off
# it while this one drives it.
CLAIM_DUE = """
UPDATE orders SET
    recovery_attempts = recovery_attempts + 1,
    retry_at = now() + make_interval(secs => greatest($2, least(
        extract(epoch FROM payment_deadline - now()),
        least($4, $3 * power(2, least(recovery_attempts, 30))) * (0.5 + random() / 2))))
WHERE id IN (
    SELECT id FROM orders WHERE status = 'PENDING' AND retry_at <= now()
    ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, created_at
"""


async def claim_due(
    conn: asyncpg.Connection, *, limit: int, lease_s: float, backoff_s: float,
    max_backoff_s: float,
) -> list[uuid.UUID]:
    """PENDING orders due for recovery, oldest first, each leased and its next look put off
    by its own back-off, so no other replica takes them and a failing one waits longer."""
    rows = await conn.fetch(CLAIM_DUE, limit, lease_s, backoff_s, max_backoff_s)
    return [r["id"] for r in sorted(rows, key=lambda r: r["created_at"])]


async def points_due(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Settled orders whose points still have to be committed or released in membership."""
    return list(await conn.fetch(POINTS_DUE, limit))


async def clear_points_pending(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    await conn.execute("UPDATE orders SET points_pending = false WHERE id = $1", order_id)
