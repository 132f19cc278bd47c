"""Placing PENDING orders: one statement for a whole batch, each order with its own outcome.

The statement locks in the lock order of `services.orders.store` (cart lines, SKU rows,
rate rows, keys); a bucketed SKU's transaction calls `lock_cart` before it takes units
from the buckets, so its cart lines are locked before buckets and SKU rows there too.
It first decides each order against the locked rows, then writes only for the orders
that are placed, so an order out of stock, past its member's rate, with a key already
held or a cart changed never fails its neighbours. Two orders of one member never share
a batch (the caller keeps them apart), so each member's rate row and cart lines are
decided once.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from services.common import outbox, ratelimit
from services.common.outbox import Pending
from services.orders.domain.order import Order
from services.orders.store import carts, idempotency


class Outcome(StrEnum):
    PLACED = "placed"
    HELD = "held"  # the key has a live record: answer from it
    SHORT = "short"  # a line asks for more units than its SKU has on hand
    RETRY = "retry"  # fits alone, not after its batch neighbours: place it again
    RATE = "rate"  # the member's checkout rate is spent
    CART = "cart"  # a cart line was claimed by another checkout, or changed
    STALE = "stale"  # a SKU is bucketed (or gone) and was not reserved by the caller


@dataclass(frozen=True, slots=True)
class Placing:
    """One order to place: its row, the hash of its request and its `orders.order.placed`."""

    order: Order
    request_hash: str
    retry_at: datetime
    event: Pending


@dataclass(frozen=True, slots=True)
class Placed:
    outcome: Outcome
    short_sku: uuid.UUID | None = None  # SHORT: the first SKU short, and its units on hand
    short_stock: int | None = None


# $1-$15 the orders (n from 1), $16-$24 their lines, $25-$29 their events, $30 the claim
# timeout (s), $31-$33 the member rate (name, interval, ceiling), $34 SKUs the caller
# reserved already in its transaction (bucketed ones), $35-$36 each order's tier and its
# discount.
_ORDERS = ("unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::bigint[], "
           "$7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], "
           "$12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::boolean[], "
           "$35::text[], $36::int[]) "
           "WITH ORDINALITY AS o(member_id, key, request_hash, order_id, status, subtotal, "
           "discount, points_redeemed, total, currency, payment_token, payment_deadline, "
           "retry_at, created_at, from_cart, tier, discount_bps, n)")
_LINES = ("unnest($16::int[], $17::int[], $18::uuid[], $19::uuid[], $20::uuid[], $21::text[], "
          "$22::int[], $23::bigint[], $24::bigint[]) AS l(n, line_no, sku_id, product_id, "
          "merchant_id, category, quantity, unit_price, line_total)")

_PLACE = f"""
WITH o AS (
    SELECT * FROM {_ORDERS}
), l AS (
    SELECT * FROM {_LINES}
), cart_rows AS (
    SELECT o.n FROM cart_items c JOIN o ON o.from_cart AND c.member_id = o.member_id
    JOIN l ON l.n = o.n AND c.sku_id = l.sku_id AND c.quantity = l.quantity
    WHERE c.order_id IS NULL ORDER BY c.member_id, c.sku_id FOR UPDATE OF c
), locked AS (
    SELECT s.id, s.stock, s.id = ANY($34::uuid[]) AS reserved FROM skus s
    WHERE s.id IN (SELECT sku_id FROM l) AND (NOT s.bucketed OR s.id = ANY($34::uuid[]))
      AND (SELECT count(*) FROM cart_rows) >= 0
    ORDER BY s.id FOR UPDATE OF s
), rated AS (
    SELECT r.key, greatest(r.tat, now()) + $32::interval > now() + $33::interval AS spent
    FROM rate_limits r
    WHERE r.name = $31 AND r.key IN (SELECT member_id::text FROM o)
      AND (SELECT count(*) FROM locked) >= 0
    ORDER BY r.key FOR UPDATE OF r
), checked AS (
    SELECT o.n,
        bool_and(k.id IS NOT NULL) AS known,
        NOT o.from_cart OR count(*) = (SELECT count(*) FROM cart_rows c WHERE c.n = o.n)
            AS carted,
        NOT EXISTS (SELECT 1 FROM rated r WHERE r.key = o.member_id::text AND r.spent)
            AS within_rate
    FROM o JOIN l ON l.n = o.n LEFT JOIN locked k ON k.id = l.sku_id
    GROUP BY o.n, o.from_cart, o.member_id
), demand AS (
    SELECT l.n, l.sku_id, l.quantity, k.stock, k.reserved, sum(l.quantity) OVER (
        PARTITION BY l.sku_id ORDER BY l.n) AS upto
    FROM l JOIN checked c ON c.n = l.n AND c.known AND c.carted AND c.within_rate
    JOIN locked k ON k.id = l.sku_id
), verdict AS (
    SELECT n, bool_and(reserved OR upto <= stock) AS fits,
        bool_and(reserved OR quantity <= stock) AS alone,
        (array_agg(sku_id ORDER BY sku_id) FILTER (WHERE NOT reserved AND quantity > stock))[1]
            AS short_sku,
        (array_agg(stock ORDER BY sku_id) FILTER (WHERE NOT reserved AND quantity > stock))[1]
            AS short_stock
    FROM demand GROUP BY n
), claimed AS (
    {idempotency.claim_sql(
        rows="(SELECT o.* FROM o JOIN verdict v ON v.n = o.n AND v.fits) AS c",
        claim_timeout="$30::float8")}
), placed AS (
    SELECT o.* FROM o JOIN claimed c ON c.member_id = o.member_id AND c.key = o.key
), taken AS (
    UPDATE skus s SET stock = s.stock - d.quantity, held = s.held + d.quantity,
        updated_at = now()
    FROM (SELECT l.sku_id, sum(l.quantity)::int AS quantity FROM l JOIN placed p ON p.n = l.n
          WHERE l.sku_id NOT IN (SELECT id FROM locked WHERE reserved) GROUP BY l.sku_id) d
    WHERE s.id = d.sku_id
    RETURNING 1
), carted AS (
    {carts.claim_sql(member="w.member_id", order="w.order_id", lines=(
        "(SELECT p.member_id, p.order_id, l.sku_id, l.quantity FROM placed p "
        "JOIN l ON l.n = p.n WHERE p.from_cart) AS w"))}
), inserted AS (
    INSERT INTO orders (id, member_id, status, subtotal, discount, points_redeemed, total,
        currency, payment_token, idempotency_key, payment_deadline, retry_at, created_at,
        from_cart, tier, discount_bps)
    SELECT order_id, member_id, status, subtotal, discount, points_redeemed, total, currency,
        payment_token, key, payment_deadline, retry_at, created_at, from_cart, tier,
        discount_bps FROM placed
    RETURNING 1
), lined AS (
    INSERT INTO order_lines (order_id, line_no, sku_id, product_id, merchant_id, category,
        quantity, unit_price, line_total)
    SELECT p.order_id, l.line_no, l.sku_id, l.product_id, l.merchant_id, l.category,
        l.quantity, l.unit_price, l.line_total
    FROM placed p JOIN l ON l.n = p.n
    RETURNING 1
), announced AS (
    {outbox.insert_sql(f"SELECT e.{', e.'.join(outbox.COLUMNS.split(', '))} "
                       f"FROM {outbox.unnest_sql(25)} JOIN placed p ON p.n = e.n ORDER BY e.n")}
    RETURNING 1
), metered AS (
    {ratelimit.take_sql(name="$31::text", key="p.member_id::text", every="$32::interval",
                        ceiling="$33::interval", source="FROM placed p")}
    RETURNING 1
)
SELECT o.n, p.n IS NOT NULL AS placed, c.known, c.carted, c.within_rate, v.fits, v.alone,
    v.short_sku, v.short_stock
FROM o LEFT JOIN checked c ON c.n = o.n LEFT JOIN verdict v ON v.n = o.n
LEFT JOIN placed p ON p.n = o.n
ORDER BY o.n
"""


def _outcome(row: asyncpg.Record) -> Placed:
    if row["placed"]:
        return Placed(Outcome.PLACED)
    if not row["known"]:
        return Placed(Outcome.STALE)
    if not row["carted"]:
        return Placed(Outcome.CART)
    if not row["within_rate"]:
        return Placed(Outcome.RATE)
    if not row["alone"]:
        return Placed(Outcome.SHORT, row["short_sku"], row["short_stock"])
    if not row["fits"]:
        return Placed(Outcome.RETRY)
    return Placed(Outcome.HELD)


def _arguments(
    batch: Sequence[Placing], *, claim_timeout_s: float, rate: tuple[str, timedelta, timedelta],
    reserved: Collection[uuid.UUID],
) -> list[object]:
    orders = [p.order for p in batch]
    lines = [(n, i, x) for n, o in enumerate(orders, 1) for i, x in enumerate(o.lines, 1)]
    return [
        [o.member_id for o in orders], [o.idempotency_key for o in orders],
        [p.request_hash for p in batch], [o.id for o in orders], [o.status for o in orders],
        [o.subtotal for o in orders], [o.discount for o in orders],
        [o.points_redeemed for o in orders], [o.total for o in orders],
        [o.currency for o in orders], [o.payment_token for o in orders],
        [o.payment_deadline for o in orders], [p.retry_at for p in batch],
        [o.created_at for o in orders], [o.from_cart for o in orders],
        [n for n, _, _ in lines], [i for _, i, _ in lines], [x.sku_id for *_, x in lines],
        [x.product_id for *_, x in lines], [x.merchant_id for *_, x in lines],
        [x.category for *_, x in lines], [x.quantity for *_, x in lines],
        [x.unit_price for *_, x in lines], [x.line_total for *_, x in lines],
        *outbox.arrays([p.event for p in batch]), claim_timeout_s, *rate, list(reserved),
        [o.tier for o in orders], [o.discount_bps for o in orders],
    ]


_LOCK_CART = ("SELECT 1 FROM cart_items WHERE member_id = $1 AND order_id IS NULL "
              "AND sku_id = ANY($2::uuid[]) ORDER BY member_id, sku_id FOR UPDATE")


async def lock_cart(conn: asyncpg.Connection, order: Order) -> None:
    """Lock a cart order's unclaimed cart lines inside the caller's transaction: the first
    step of the lock order, taken before a bucketed SKU's buckets and SKU rows."""
    if order.from_cart:
        await conn.execute(_LOCK_CART, order.member_id, [x.sku_id for x in order.lines])


async def place(
    conn: asyncpg.Connection, batch: Sequence[Placing], *, claim_timeout_s: float,
    rate: tuple[str, timedelta, timedelta], reserved: Collection[uuid.UUID] = (),
) -> list[Placed]:
    """Place what can be placed of `batch` (no two orders of one member) in one statement:
    key, cart lines, stock held, the member's rate spent, order, lines and event, for each
    order all or nothing. `reserved`: SKUs whose units the caller's transaction already
    holds for the batch's (single) order, e.g. from a bucketed SKU's buckets."""
    members = [p.order.member_id for p in batch]
    if len(set(members)) != len(members):
        raise ValueError("two orders of one member in one placing batch")
    rows = await conn.fetch(_PLACE, *_arguments(batch, claim_timeout_s=claim_timeout_s,
                                                rate=rate, reserved=reserved))
    return [_outcome(r) for r in rows]
