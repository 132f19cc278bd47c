"""The lock order of `services.orders.store`, held by the bucketed SKU's placing transaction.

A member's cart checkout of a bucketed SKU takes the hot path (a transaction: buckets,
SKU rows, then the placing statement); a second checkout of the same member's cart lines
is placed by the batched statement (cart lines, then SKU rows). The interleaving that
used to deadlock is forced: the hot path has taken its first locks, the statement is
waiting on it (`pg_blocking_pids`), then the hot path runs its placing statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.common import db
from services.common.migrations import migrate_service
from services.orders.pipeline import PgPlaces
from services.orders.store import carts, placing, stock
from services.orders.store.placing import Outcome
from tests.helpers import eventually
from tests.infra import FreshDb
from tests.integration.orders import factories as f
from tests.integration.orders.test_checkout_batches import RATE, _order, _placing


class HeldPool:
    """A pool whose connection waits, before the placing statement, until `blocked()`."""

    def __init__(self, pool: asyncpg.Pool, watch: asyncpg.Connection) -> None:
        self.pool, self.watch = pool, watch
        self.waiting_pid = 0  # the session that must be waiting on this one first
        self.reached: list[str] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            yield _Held(conn, self)

    async def blocked(self) -> bool:
        return self.waiting_pid != 0 and bool(await self.watch.fetchval(
            "SELECT cardinality(pg_blocking_pids($1)) > 0", self.waiting_pid))


class _Held:
    def __init__(self, conn: asyncpg.Connection, pool: HeldPool) -> None:
        self._conn, self._pool = conn, pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if "INSERT INTO orders" in query:  # the placing statement
            self._pool.reached.append("placing")
            await eventually(self._pool.blocked, what="the other checkout waiting on this one")
        return list(await self._conn.fetch(query, *args))


@pytest.fixture
async def database(fresh_db: object) -> AsyncIterator[str]:
    fresh: FreshDb = await fresh_db("orders")  # type: ignore[operator]
    await migrate_service(fresh.dsn("orders"), "orders")
    yield fresh.dsn("orders")


async def test_a_hot_cart_checkout_and_a_batched_one_of_the_same_cart_never_deadlock(
    database: str,
) -> None:
    pool = await db.create_pool(database, schema="orders", application_name="test")
    conn = await db.connect(database, schema="orders", application_name="test")
    other = await db.connect(database, schema="orders", application_name="test")
    try:
        hot, plain = await f.product(conn, await f.merchant(conn), skus=[(500, 5), (900, 5)])
        await stock.set_bucketed(conn, hot.id, buckets=2)
        buyer = uuid.uuid4()
        for sku in (hot, plain):
            await carts.put(conn, buyer, sku.id, 1)
        held = HeldPool(pool, conn)
        places = PgPlaces(pool=held, claim_timeout_s=30, rate=RATE.params)  # type: ignore[arg-type]
        whole_cart = _order((hot, 1), (plain, 1), member_id=buyer, key="a", from_cart=True)
        # The same member's cart as another checkout read it (the bucketed line removed).
        part = _order((plain, 1), member_id=buyer, key="b", from_cart=True)

        hot_path = asyncio.create_task(places.place_reserved(_placing(whole_cart),
                                                             hot={hot.id}))
        await eventually(lambda: _copy(held.reached), what="the hot path at its statement")
        held.waiting_pid = other.get_server_pid()
        batched = await placing.place(other, [_placing(part)], claim_timeout_s=30,
                                      rate=RATE.params())
        hot_placed = await hot_path
    finally:
        await other.close()
        await conn.close()
        await pool.close()

    # The hot path locked the cart lines first: the batched statement waited for them, then
    # found them claimed (a changed cart) instead of holding them against the hot path.
    assert hot_placed.outcome == Outcome.PLACED
    assert [p.outcome for p in batched] == [Outcome.CART]


async def _copy(seen: list[str]) -> list[str]:
    return list(seen)
