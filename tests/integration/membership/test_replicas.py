"""Two membership replicas sharing the order consumer: batches that touch the same members
in opposite orders wait on each other instead of deadlocking.

Each replica is the order consumer on a connection of its own to one database, as two
processes would be. The test forces the interleaving that deadlocks when member rows are
locked event by event: a replica that has taken its first member lock goes on only once
the other has taken its own, or is waiting for one (so no timing decides the outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from nats.aio.msg import Msg

from services.common import db
from services.common.bus import Bus
from services.common.migrations import migrate_service
from services.membership import handlers
from services.membership.batch import OrderConsumer
from services.membership.store import members
from tests.helpers import eventually
from tests.infra import FreshDb
from tests.integration.membership.factories import order_confirmed, order_refunded
from tests.integration.membership.test_confirmation_batches import (
    REFUNDED,
    all_acked,
    fetch,
    ids,
    order_consumer,
    publish,
)


class Replica:
    """A membership process: the order consumer on a connection of its own."""

    def __init__(self, pool: asyncpg.Pool, watch: asyncpg.Pool, bus: Bus) -> None:
        self.pool, self.watch = pool, watch
        self.consumer: OrderConsumer = order_consumer(self, bus)
        self.other: Replica | None = None  # once set, the first member lock waits for it
        self.locked = False
        self.pid = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """The consumer's connection, telling this replica when it has locked members."""
        async with self.pool.acquire() as conn:
            self.pid = conn.get_server_pid()
            yield _Watched(conn, self)

    async def has_locked_members(self) -> None:
        if self.other is None or self.locked:
            return
        self.locked = True
        await eventually(self.other.holds_or_waits, what="the other replica's member lock")

    async def holds_or_waits(self) -> bool:
        """Whether this replica has locked members or is waiting for a lock."""
        return self.locked or bool(await self.watch.fetchval(
            "SELECT cardinality(pg_blocking_pids($1)) > 0", self.pid))


class _Watched:
    """A connection that reports each statement locking member rows to its replica."""

    def __init__(self, conn: asyncpg.Connection, replica: Replica) -> None:
        self._conn, self._replica = conn, replica

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._reported(query, self._conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._reported(query, self._conn.fetchrow(query, *args))

    async def _reported(self, query: str, statement: Awaitable[Any]) -> Any:
        result = await statement
        if "FROM members" in query and "FOR UPDATE" in query:
            await self._replica.has_locked_members()
        return result


@pytest.fixture
async def replicas(fresh_db: Callable[..., Awaitable[FreshDb]],
                   bus: Bus) -> AsyncIterator[tuple[Replica, Replica]]:
    database = await fresh_db("membership")
    dsn = database.dsn("membership")
    await migrate_service(dsn, "membership")
    pools = [await db.create_pool(dsn, schema="membership", application_name="test",
                                  min_size=1, max_size=size) for size in (1, 1, 2)]
    yield Replica(pools[0], pools[2], bus), Replica(pools[1], pools[2], bus)
    for pool in pools:
        await pool.close()


async def _apply_in_batches(replica: Replica, msgs: list[Msg]) -> None:
    await replica.consumer.apply(msgs)


async def _apply_one_by_one(replica: Replica, msgs: list[Msg]) -> None:
    """The consumer's fallback path (a savepoint per event), as after a failed batch."""
    async with replica.acquire() as conn:
        await replica.consumer.apply_each(conn, msgs)


@pytest.mark.parametrize("apply", [_apply_in_batches, _apply_one_by_one])
async def test_replicas_confirming_and_refunding_the_same_members_in_opposite_orders(
    replicas: tuple[Replica, Replica], bus: Bus, caplog: pytest.LogCaptureFixture,
    apply: Callable[[Replica, list[Msg]], Awaitable[None]],
) -> None:
    one, two = replicas
    first, second = ids(2)
    for member_id in (first, second):
        await members.insert(one.pool, member_id=member_id, email=f"{member_id}@example.cn",
                             password_hash="x", name="Li Lei", birth_year=1990,
                             region="CN-SH", gender=None)
    await bus.js.add_consumer(handlers.STREAM, config=one.consumer.config())
    sub = await bus.js.pull_subscribe_bind(durable=handlers.CONSUMER, stream=handlers.STREAM)
    earlier = [order_confirmed(str(m), 300_000) for m in (first, second)]  # each → SILVER
    for message in earlier:
        await publish(bus, message)
    await one.consumer.apply(await fetch(sub, 2))
    # Each replica confirms a new order of one member and refunds the other's earlier one.
    for member_id, refunded in ((first, earlier[1]), (second, earlier[0])):
        await publish(bus, order_confirmed(str(member_id), 50_000))
        await publish(bus, order_refunded(refunded.member_id, refunded.order_id, 300_000,
                                          300_000), subject=REFUNDED)
    msgs = await fetch(sub, 4)
    one.other, two.other = two, one
    caplog.set_level(logging.WARNING)

    await _together(apply(one, msgs[:2]), apply(two, msgs[2:]))

    problems = [getattr(r, "error", r.getMessage()) for r in caplog.records]
    assert [(r.consumer.fallbacks_total, r.consumer.last_error) for r in replicas] == [
        (0, None), (0, None)], problems
    # Whichever replica went first: ¥3,000 refunded in full, then ¥500 earning 500 points.
    assert [tuple(r) for r in await one.pool.fetch(
        "SELECT id, tier, lifetime_spend, points_balance FROM members ORDER BY id")] == [
        (first, "BRONZE", 50_000, 500), (second, "BRONZE", 50_000, 500)]
    if apply is _apply_in_batches:
        await all_acked(one.consumer)


async def _together(*steps: Awaitable[None]) -> None:
    """Run the steps concurrently; all of them end before any error is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
