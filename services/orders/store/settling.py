"""Settling PENDING orders: confirmed (paid) or cancelled, one statement for a whole batch.

For each order still PENDING: its status, payment and reason; its claimed cart lines
deleted (bought) or given back (cancelled); its held units sold or back on hand; its
events in the outbox; the checkout's answer stored under its key. An order no longer
PENDING is left exactly as it is. Locks, in the lock order of `services.orders.store`:
the orders' rows, their cart lines, the SKUs' rows, the keys; every lock is taken before
the first write. A cancelled order's units of a bucketed SKU belong in the SKU's buckets:
the caller's transaction locks the order (`lock_order`), puts the units there and names
the SKUs in `refilled`; without that such an order is not settled here (BUCKETS).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from services.common import outbox
from services.common.outbox import Pending
from services.orders.domain.order import Order, OrderStatus
from services.orders.store import idempotency


class Settled(StrEnum):
    DONE = "done"
    GONE = "gone"  # no longer PENDING (settled elsewhere): left as it is
    BUCKETS = "buckets"  # cancelled with units of a bucketed SKU: see the module's note


@dataclass(frozen=True, slots=True)
class Settling:
    """An order as it is to be (CONFIRMED or CANCELLED), its answer and its events."""

    order: Order
    reply_status: int
    reply_body: bytes
    events: tuple[Pending, ...]


_ORDERS = ("unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::boolean[], "
           "$6::bigint[], $7::int[], $8::bytea[]) WITH ORDINALITY AS s(order_id, status, "
           "payment_id, cancel_reason, points_pending, refunded, reply_status, reply_body, n)")

_SETTLE = f"""
WITH s AS (
    SELECT * FROM {_ORDERS}
), locked AS (
    SELECT o.id, o.member_id, o.from_cart FROM orders o
    WHERE o.id IN (SELECT order_id FROM s) AND o.status = 'PENDING'
    ORDER BY o.id FOR UPDATE OF o
), held_cart AS (
    SELECT c.sku_id FROM cart_items c JOIN locked k ON k.from_cart
        AND c.member_id = k.member_id AND c.order_id = k.id
    WHERE (SELECT count(*) FROM locked) >= 0
    ORDER BY c.member_id, c.sku_id FOR UPDATE OF c
), lines AS (
    SELECT l.order_id, l.sku_id, l.quantity FROM order_lines l
    WHERE l.order_id IN (SELECT id FROM locked)
), stock AS (
    SELECT k.id, k.bucketed AND NOT k.id = ANY($15::uuid[]) AS bucketed FROM skus k
    WHERE k.id IN (SELECT sku_id FROM lines) AND (SELECT count(*) FROM held_cart) >= 0
    ORDER BY k.id FOR UPDATE OF k
), movable AS (
    SELECT s.*, k.member_id, k.from_cart FROM s JOIN locked k ON k.id = s.order_id
    WHERE (SELECT count(*) FROM stock) >= 0 AND (s.status = 'CONFIRMED' OR NOT EXISTS (
        SELECT 1 FROM lines l JOIN stock t ON t.id = l.sku_id
        WHERE l.order_id = s.order_id AND t.bucketed))
), changed AS (
    UPDATE orders o SET status = m.status, payment_id = coalesce(m.payment_id, o.payment_id),
        cancel_reason = coalesce(m.cancel_reason, o.cancel_reason),
        points_pending = o.points_pending OR m.points_pending,
        refunded = coalesce(m.refunded, o.refunded), updated_at = now()
    FROM movable m WHERE o.id = m.order_id
    RETURNING o.id
), uncarted AS (
    DELETE FROM cart_items c USING movable m
    WHERE m.status = 'CONFIRMED' AND m.from_cart AND c.member_id = m.member_id
      AND c.order_id = m.order_id
    RETURNING 1
), recarted AS (
    UPDATE cart_items c SET order_id = NULL FROM movable m
    WHERE m.status = 'CANCELLED' AND m.from_cart AND c.member_id = m.member_id
      AND c.order_id = m.order_id
    RETURNING 1
), moved AS (
    UPDATE skus k SET sold = k.sold + d.sold, stock = k.stock + d.back,
        held = k.held - d.sold - d.back, updated_at = now()
    FROM (SELECT l.sku_id,
              coalesce(sum(l.quantity) FILTER (WHERE m.status = 'CONFIRMED'), 0) AS sold,
              coalesce(sum(l.quantity) FILTER (WHERE m.status = 'CANCELLED'), 0) AS back
          FROM lines l JOIN movable m ON m.order_id = l.order_id GROUP BY l.sku_id) d
    WHERE k.id = d.sku_id
    RETURNING 1
), announced AS (
    {outbox.insert_sql(
        f"SELECT e.{', e.'.join(outbox.COLUMNS.split(', '))} FROM {outbox.unnest_sql(9)} "
        "JOIN unnest($14::int[]) WITH ORDINALITY AS x(order_n, n) ON x.n = e.n "
        "JOIN movable m ON m.n = x.order_n ORDER BY e.n")}
    RETURNING 1
), answered AS (
    {idempotency.complete_sql(
        rows="(SELECT order_id, reply_status AS status, reply_body AS body FROM movable) AS a")}
)
SELECT array(SELECT order_id FROM movable) AS done, (SELECT count(*) FROM changed) AS changed,
    (SELECT count(*) FROM uncarted) + (SELECT count(*) FROM recarted) AS carts,
    (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM announced) AS announced,
    (SELECT count(*) FROM answered) AS answered,
    array(SELECT order_id FROM s WHERE order_id NOT IN (SELECT id FROM locked)) AS gone
"""


def _arguments(batch: Sequence[Settling], refilled: Collection[uuid.UUID]) -> list[object]:
    orders = [x.order for x in batch]
    events = [(n, e) for n, x in enumerate(batch, 1) for e in x.events]
    for o in orders:
        if o.status not in (OrderStatus.CONFIRMED, OrderStatus.CANCELLED):
            raise ValueError(f"order {o.id} settles as CONFIRMED or CANCELLED, not {o.status}")
    return [
        [o.id for o in orders], [str(o.status) for o in orders], [o.payment_id for o in orders],
        [o.cancel_reason and str(o.cancel_reason) for o in orders],
        [o.points_pending for o in orders],
        [o.refunded if o.status == OrderStatus.CONFIRMED else None for o in orders],
        [x.reply_status for x in batch], [x.reply_body for x in batch],
        *outbox.arrays([e for _, e in events]), [n for n, _ in events], list(refilled),
    ]


async def lock_order(conn: asyncpg.Connection, order: Order) -> None:
    """Lock an order's row and the cart lines it holds inside the caller's transaction: the
    first steps of the lock order, taken before a refill touches the buckets."""
    await conn.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", order.id)
    await conn.execute("SELECT 1 FROM cart_items WHERE member_id = $1 AND order_id = $2 "
                       "ORDER BY member_id, sku_id FOR UPDATE", order.member_id, order.id)


async def settle(
    conn: asyncpg.Connection, batch: Sequence[Settling], *,
    refilled: Collection[uuid.UUID] = (),
) -> list[Settled]:
    """Settle `batch` in one statement; each order's own result, in the batch's order."""
    row = await conn.fetchrow(_SETTLE, *_arguments(batch, refilled))
    assert row is not None
    done, gone = set(row["done"]), set(row["gone"])
    return [Settled.DONE if x.order.id in done else Settled.GONE if x.order.id in gone
            else Settled.BUCKETS for x in batch]
