"""Orders, their lines and the stock they hold, sold or give back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.common import ratelimit
from services.common.outbox import Pending
from services.orders.store import carts, idempotency
from services.orders.store.stock import (  # noqa: F401  (re-exported)
    OutOfStock,
    StaleHotness,
    release_held,
    return_sold,
    sell_held,
)
from services.orders.store.stock import reserve as reserve_stock  # noqa: F401

ORDER_COLUMNS = (
    "id, member_id, status, subtotal, discount, points_redeemed, total, currency, "
    "payment_token, payment_id, cancel_reason, idempotency_key, payment_deadline, "
    "points_pending, created_at, refunded, from_cart"
)


@dataclass(frozen=True, slots=True)
class Line:
    sku_id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID
    category: str
    quantity: int
    unit_price: int
    line_total: int


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    member_id: uuid.UUID
    status: str
    subtotal: int
    discount: int
    points_redeemed: int
    total: int
    currency: str
    payment_token: str
    payment_id: uuid.UUID | None
    cancel_reason: str | None
    idempotency_key: str
    payment_deadline: datetime
    points_pending: bool
    created_at: datetime
    lines: tuple[Line, ...]
    refunded: int = 0  # what payments refunded of `total` (partial refunds keep it CONFIRMED)
    from_cart: bool = False  # checked out from the cart: it claimed those cart lines


async def insert_order(conn: asyncpg.Connection, order: Order, *, retry_at: datetime) -> None:
    """The order and all its lines, in one statement."""
    lines = order.lines
    await conn.execute(
        "WITH o AS (INSERT INTO orders (id, member_id, status, subtotal, discount, "
        "points_redeemed, total, currency, payment_token, idempotency_key, payment_deadline, "
        "retry_at, created_at, from_cart) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id) "
        "INSERT INTO order_lines (order_id, line_no, sku_id, product_id, merchant_id, category, "
        "quantity, unit_price, line_total) SELECT o.id, l.* FROM o, unnest($15::int[], "
        "$16::uuid[], $17::uuid[], $18::uuid[], $19::text[], $20::int[], $21::bigint[], "
        "$22::bigint[]) AS l",
        order.id, order.member_id, order.status, order.subtotal, order.discount,
        order.points_redeemed, order.total, order.currency, order.payment_token,
        order.idempotency_key, order.payment_deadline, retry_at, order.created_at,
        order.from_cart, list(range(1, len(lines) + 1)), [x.sku_id for x in lines],
        [x.product_id for x in lines], [x.merchant_id for x in lines],
        [x.category for x in lines], [x.quantity for x in lines],
        [x.unit_price for x in lines], [x.line_total for x in lines],
    )


class NotPlaced(Exception):
    """The one-statement placement could not take a line's stock as remembered (too few
    units, or the SKU bucketed since) or its cart line: it wrote nothing, and the transaction
    path decides."""


# A checkout whose SKUs are all known not to be bucketed, as one statement (one round trip,
# no BEGIN/COMMIT of its own): claim the key (its row lock first, as in the transaction
# path), then for a cart order its cart lines, take the stock of every line in SKU order,
# insert the order, its lines and `orders.order.placed`. A key held by another request
# claims nothing, so nothing else happens. A line it cannot take fails the whole statement:
# too few units break `skus.stock >= 0`; a SKU bucketed since (whose units are in its
# buckets), or a cart line claimed by another checkout or changed since it was read, is not
# taken, so its order line has no `sku_id` and breaks NOT NULL. Last (so after the stock,
# the transaction path's lock order too) it spends one of the member's checkout rate, whose
# refusal (a check violation on `rate_limits`) fails the statement as well.
_PLACE = f"""
WITH claimed AS (
    {idempotency.CLAIM}
), lines AS (
    SELECT w.sku_id, w.quantity FROM unnest($18::uuid[], $22::int[]) AS w(sku_id, quantity)
    WHERE EXISTS (SELECT 1 FROM claimed)
), carted AS (
    {carts.claim_sql(member="$1", order="$5",
                     lines="(SELECT * FROM lines WHERE $16::boolean) AS w")}
), want AS (
    SELECT sku_id, quantity FROM lines
    WHERE NOT $16::boolean OR sku_id IN (SELECT sku_id FROM carted)
), locked AS (
    SELECT s.id FROM skus s JOIN want ON want.sku_id = s.id WHERE NOT s.bucketed
    ORDER BY s.id FOR UPDATE OF s
), taken AS (
    UPDATE skus s SET stock = s.stock - want.quantity, held = s.held + want.quantity,
        updated_at = now()
    FROM want JOIN locked ON locked.id = want.sku_id WHERE s.id = want.sku_id
    RETURNING s.id
), placed AS (
    INSERT INTO orders (id, member_id, status, subtotal, discount, points_redeemed, total,
        currency, payment_token, idempotency_key, payment_deadline, retry_at, created_at,
        from_cart)
    SELECT $5, $1, $6::text, $7::bigint, $8::bigint, $9::bigint, $10::bigint, $11::text,
        $12::text, $2, $13::timestamptz, $14::timestamptz, $15::timestamptz, $16::boolean
    FROM claimed
    RETURNING id
), lined AS (
    INSERT INTO order_lines (order_id, line_no, sku_id, product_id, merchant_id, category,
        quantity, unit_price, line_total)
    SELECT placed.id, l.line_no, taken.id, l.product_id, l.merchant_id, l.category,
        l.quantity, l.unit_price, l.line_total
    FROM placed CROSS JOIN unnest($17::int[], $18::uuid[], $19::uuid[], $20::uuid[],
        $21::text[], $22::int[], $23::bigint[], $24::bigint[])
        AS l(line_no, sku_id, product_id, merchant_id, category, quantity, unit_price,
             line_total)
    LEFT JOIN taken ON taken.id = l.sku_id
    RETURNING 1
), announced AS (
    INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers)
    SELECT $25::uuid, $26::text, $27::text, $28::bytea, $29::jsonb FROM placed
    RETURNING 1
), metered AS (
    {ratelimit.take_sql(name="$30::text", key="$1::text", every="$31::interval",
                        ceiling="$32::interval", source="FROM claimed")}
    RETURNING 1
)
SELECT (SELECT count(*) FROM claimed) > 0, (SELECT count(*) FROM taken),
       (SELECT count(*) FROM lined), (SELECT count(*) FROM announced),
       (SELECT count(*) FROM metered)
"""


async def place(
    conn: asyncpg.Connection, order: Order, *, retry_at: datetime, request_hash: str,
    claim_timeout_s: float, event: Pending, rate: tuple[str, timedelta, timedelta],
) -> bool:
    """Claim the key, hold the stock and insert the PENDING order with `event`, all or
    nothing, for lines of SKUs none of which is bucketed (a cart order claims its cart lines
    too), spending one of the member's checkout `rate` (`SharedLimit.params`); False if the
    key is held (then nothing was written). Raises NotPlaced when a line's stock or cart
    line could not be taken, and the rate's refusal (`ratelimit.is_refusal`) as it is."""
    lines = order.lines
    try:
        claimed = await conn.fetchval(
            _PLACE, order.member_id, order.idempotency_key, request_hash, claim_timeout_s,
            order.id, order.status, order.subtotal, order.discount, order.points_redeemed,
            order.total, order.currency, order.payment_token, order.payment_deadline, retry_at,
            order.created_at, order.from_cart, list(range(1, len(lines) + 1)),
            [x.sku_id for x in lines], [x.product_id for x in lines],
            [x.merchant_id for x in lines], [x.category for x in lines],
            [x.quantity for x in lines], [x.unit_price for x in lines],
            [x.line_total for x in lines], event.event_id, event.subject, event.aggregate_id,
            event.payload, event.headers, *rate,
        )
    except asyncpg.CheckViolationError as exc:
        if exc.table_name != "skus":
            raise
        raise NotPlaced(f"order {order.id}: a SKU has too few units") from exc
    except asyncpg.NotNullViolationError as exc:
        if (exc.table_name, exc.column_name) != ("order_lines", "sku_id"):
            raise
        raise NotPlaced(f"order {order.id}: a SKU is bucketed or gone, or a cart line "
                        "is claimed or changed") from exc
    return bool(claimed)


async def _lines(conn: asyncpg.Connection, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    rows = await conn.fetch(
        "SELECT order_id, sku_id, product_id, merchant_id, category, quantity, unit_price, "
        "line_total FROM order_lines WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line_no",
        order_ids,
    )
    lines: dict[uuid.UUID, list[Line]] = {oid: [] for oid in order_ids}
    for r in rows:
        lines[r["order_id"]].append(Line(**{k: r[k] for k in Line.__slots__}))
    return lines


async def _hydrate(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Order]:
    lines = await _lines(conn, [r["id"] for r in rows])
    return [Order(**dict(r), lines=tuple(lines[r["id"]])) for r in rows]


async def get_order(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, member_id: uuid.UUID | None = None,
    for_update: bool = False,
) -> Order | None:
    """The order; with `member_id`, only if it is that member's."""
    sql = (f"SELECT {ORDER_COLUMNS} FROM orders "
           "WHERE id = $1 AND ($2::uuid IS NULL OR member_id = $2)")
    row = await conn.fetchrow(sql + (" FOR UPDATE" if for_update else ""), order_id, member_id)
    return (await _hydrate(conn, [row]))[0] if row else None


async def list_orders(
    conn: asyncpg.Connection, *, member_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None, limit: int,
) -> list[Order]:
    """The member's orders newest first, one row more than `limit`."""
    if after is None:
        rows = await conn.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE member_id = $1 "
            "ORDER BY created_at DESC, id DESC LIMIT $2", member_id, limit + 1)
    else:
        rows = await conn.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE member_id = $1 "
            "AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4",
            member_id, after[0], after[1], limit + 1)
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


# PENDING → CONFIRMED as one statement, so one round trip and no BEGIN/COMMIT of its own.
# Every part hangs off `changed`: an order no longer PENDING changes nothing at all. The
# locks are taken in the order every other transaction takes them: the order row, then the
# cart lines it claimed, then its SKUs' rows in SKU order (`locked`), then the idempotency
# key's row. A held count that would go negative breaks `skus.held >= 0` and fails the
# whole statement. The last SELECT reads the parts in turn, which runs them in that order.
_CONFIRM = """
WITH changed AS (
    UPDATE orders SET status = $12, payment_id = $3,
        points_pending = points_pending OR $4, updated_at = now()
    WHERE id = $1 AND status = $2
    RETURNING id, member_id, from_cart
), uncarted AS (
    DELETE FROM cart_items ci USING changed c
    WHERE c.from_cart AND ci.member_id = c.member_id AND ci.order_id = c.id
    RETURNING 1
), lines AS (
    SELECT l.sku_id, l.quantity FROM order_lines l JOIN changed c ON l.order_id = c.id
), locked AS (
    SELECT s.id FROM skus s JOIN lines ON lines.sku_id = s.id ORDER BY s.id FOR UPDATE OF s
), sold AS (
    UPDATE skus s SET sold = s.sold + lines.quantity, held = s.held - lines.quantity,
        updated_at = now()
    FROM lines JOIN locked ON locked.id = lines.sku_id WHERE s.id = lines.sku_id
    RETURNING s.id
), announced AS (
    INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers)
    SELECT $5::uuid, $6::text, $7::text, $8::bytea, $9::jsonb FROM changed
    RETURNING 1
), answered AS (
    UPDATE idempotency_keys k SET status = 'done', response_status = $10, response_body = $11
    FROM changed WHERE k.order_id = changed.id AND k.status = 'in_flight'
    RETURNING 1
)
SELECT (SELECT count(*) FROM changed) > 0, (SELECT count(*) FROM uncarted),
       (SELECT count(*) FROM sold), (SELECT count(*) FROM announced),
       (SELECT count(*) FROM answered)
"""


async def confirm_paid(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, was: str, now: str, payment_id: uuid.UUID,
    points_pending: bool, event: Pending, reply_status: int, reply_body: bytes,
) -> bool:
    """Confirm a paid order: status, the cart lines it claimed gone, held units sold, `event`
    in the outbox and the checkout's answer stored, all or nothing; False if it was not `was`.

    For a payment with nothing refunded yet (the checkout's own path); `change_status` and
    friends in one transaction cover the rest.
    """
    return bool(await conn.fetchval(
        _CONFIRM, order_id, was, payment_id, points_pending, event.event_id, event.subject,
        event.aggregate_id, event.payload, event.headers, reply_status, reply_body, now,
    ))


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
_CLAIM_DUE = """
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
    rows = await conn.fetch(_CLAIM_DUE, limit, lease_s, backoff_s, max_backoff_s)
    return [r["id"] for r in sorted(rows, key=lambda r: r["created_at"])]


async def points_due(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Settled orders whose points still have to be committed or released in membership."""
    return list(await conn.fetch(
        "SELECT id, status FROM orders WHERE points_pending ORDER BY updated_at LIMIT $1", limit))


async def clear_points_pending(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    await conn.execute("UPDATE orders SET points_pending = false WHERE id = $1", order_id)
