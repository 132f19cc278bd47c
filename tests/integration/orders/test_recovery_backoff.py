"""Recovery's back-off per order: each claim of a PENDING order puts its next look further
off (exponential, jittered, capped), never past its payment deadline."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from services.common import db
from services.common.migrations import migrate_service
from services.orders.store import orders as store
from tests.infra import FreshDb

LEASE_S = 0.5
BASE_S = 1.0
CAP_S = 16.0


@pytest.fixture
async def conn(fresh_db: Callable[..., Awaitable[FreshDb]]) -> AsyncIterator[asyncpg.Connection]:
    database = await fresh_db("orders")
    await migrate_service(database.dsn("orders"), "orders")
    connection = await db.connect(database.dsn("orders"), schema="orders",
                                  application_name="test")
    yield connection
    await connection.close()


async def _pending(conn: asyncpg.Connection, *, deadline_s: float = 3600) -> uuid.UUID:
    """A PENDING order due for recovery now, its payment deadline `deadline_s` away."""
    order_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO orders (id, member_id, status, subtotal, discount, points_redeemed, total, "
        "payment_token, idempotency_key, payment_deadline, retry_at) "
        "VALUES ($1, $2, 'PENDING', 100, 0, 0, 100, 'tok_slow', $3, "
        "        now() + make_interval(secs => $4), now() - interval '1 second')",
        order_id, uuid.uuid4(), str(order_id), deadline_s)
    return order_id


async def _claim(conn: asyncpg.Connection, *, limit: int = 20) -> dict[uuid.UUID, float]:
    """Claim what is due; each claimed order's next look, in seconds from the claim."""
    async with conn.transaction():  # one now() for the claim and the read
        claimed = await store.claim_due(conn, limit=limit, lease_s=LEASE_S, backoff_s=BASE_S,
                                        max_backoff_s=CAP_S)
        rows = await conn.fetch(
            "SELECT id, extract(epoch FROM retry_at - now())::float8 AS wait "
            "FROM orders WHERE id = ANY($1::uuid[])", claimed)
    return {r["id"]: r["wait"] for r in rows}


async def _make_due(conn: asyncpg.Connection, order_id: uuid.UUID) -> None:
    await conn.execute("UPDATE orders SET retry_at = now() - interval '1 second' WHERE id = $1",
                       order_id)


async def test_each_claim_doubles_the_wait_up_to_the_cap(conn: asyncpg.Connection) -> None:
    order_id = await _pending(conn)
    for attempt in range(8):
        waits = await _claim(conn)
        ceiling = min(CAP_S, BASE_S * 2**attempt)
        assert ceiling / 2 <= waits[order_id] <= ceiling, (attempt, waits)
        assert await _claim(conn) == {}, "not due again before its wait is over"
        await _make_due(conn, order_id)
    attempts = await conn.fetchval("SELECT recovery_attempts FROM orders WHERE id = $1", order_id)
    assert attempts == 8


async def test_orders_failing_together_are_spread_out(conn: asyncpg.Connection) -> None:
    ids = [await _pending(conn) for _ in range(20)]
    for _ in range(3):  # the same attempt count for all: only the jitter tells them apart
        waits = await _claim(conn)
        for order_id in ids:
            await _make_due(conn, order_id)
    assert len({round(w, 3) for w in waits.values()}) > 10, waits


async def test_the_wait_ends_at_the_payment_deadline(conn: asyncpg.Connection) -> None:
    order_id = await _pending(conn, deadline_s=3)
    for _ in range(6):  # by now the back-off alone would be 32 s, capped at 16 s
        await _claim(conn)
        await _make_due(conn, order_id)
    waits = await _claim(conn)
    assert LEASE_S <= waits[order_id] <= 3, waits


async def test_past_the_deadline_it_is_looked_at_again_after_the_lease(
    conn: asyncpg.Connection,
) -> None:
    order_id = await _pending(conn, deadline_s=-1)
    assert (await _claim(conn))[order_id] == pytest.approx(LEASE_S)
