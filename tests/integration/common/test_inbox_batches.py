"""The inbox consumer's optimistic batch path and its per-event fallback, on real servers.

Each test fetches the batch itself and hands it to `Consumer.apply`, so which events share
a batch is decided here, not by timing. Every statement the consumer sends is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from marketplace.events.v1 import events_pb2
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import db
from services.common.bus import Bus
from services.common.events import Event, envelope_headers
from services.common.inbox import Consumer
from services.common.migrations import migrate
from tests.helpers import eventually
from tests.infra import FreshDb

SCHEMA = "orders"
SUBJECT = "orders.order.cancelled"


class RecordingPool:
    """The consumer's pool, noting every statement sent on a connection it hands out."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            with conn.query_logger(self._note):
                yield conn

    def _note(self, query: LoggedQuery) -> None:
        self.statements.append(query.query)

    async def kinds(self) -> list[str]:
        """The statements so far, by kind; forgets them."""
        await asyncio.sleep(0)  # asyncpg delivers query logs with call_soon
        kinds = [_kind(s) for s in self.statements]
        self.statements.clear()
        return kinds


def _kind(sql: str) -> str:
    if sql.startswith("INSERT INTO inbox"):
        return "claim" if "unnest" in sql else "inbox row"
    if sql.startswith("INSERT INTO effects"):
        return "effect"
    return sql.split()[0].rstrip(";").upper()


@pytest.fixture
async def pool(fresh_db, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    database: FreshDb = await fresh_db()
    # One connection, warmed up: asyncpg looks up an array type on a connection's first use
    # of it, and those lookups are not the consumer's statements.
    pool = await db.create_pool(database.dsn(SCHEMA), schema=SCHEMA, application_name="test",
                                min_size=1, max_size=1)
    async with pool.acquire() as conn:
        await migrate(conn, schema=SCHEMA, service_dir=tmp_path)  # only the shared tables
        await conn.execute("CREATE TABLE effects (event_id uuid, order_id text)")
        await conn.fetchval("SELECT $1::uuid[], $2::text[]", [], [])
    yield pool
    await pool.close()


class NotYet(Exception):
    """Asks for the event again later, like membership's `loyalty.NotYetApplicable`."""


def recording_handler(*, poison: str = "", late: str = ""):
    """Records each order id; `poison` always fails, `late` fails on its first delivery."""

    async def handle(conn: asyncpg.Connection, event: Event) -> None:
        order_id = event.message().order_id
        if order_id == poison:
            raise RuntimeError(f"poison order {order_id}")
        if order_id == late and event.deliveries < 2:
            raise NotYet(f"order {order_id} is not applicable yet")
        await conn.execute("INSERT INTO effects (event_id, order_id) VALUES ($1, $2)",
                           event.id, order_id)

    return handle


Started = tuple[Consumer, RecordingPool, JetStreamContext.PullSubscription]


async def start(bus: Bus, pool: asyncpg.Pool, **kwargs: Any) -> Started:
    """A consumer on a recording pool, and a subscription on its durable to fetch batches."""
    recording = RecordingPool(pool)
    consumer = Consumer(pool=recording, bus=bus, name=f"test-{uuid.uuid4().hex[:8]}",
                        stream="ORDERS", subjects=[SUBJECT], **kwargs)
    await bus.js.add_consumer("ORDERS", config=consumer.config())
    sub = await bus.js.pull_subscribe_bind(durable=consumer.name, stream="ORDERS")
    return consumer, recording, sub


async def publish(bus: Bus, order_id: str, event_id: uuid.UUID | None = None) -> uuid.UUID:
    """Publish with a fresh Nats-Msg-Id, so that JetStream keeps a repeated event id."""
    event_id = event_id or uuid.uuid4()
    headers = envelope_headers(SUBJECT, event_id, "orders")
    headers["Nats-Msg-Id"] = str(uuid.uuid4())
    await bus.publish(SUBJECT, events_pb2.OrderCancelled(order_id=order_id).SerializeToString(),
                      headers)
    return event_id


async def fetch(sub: JetStreamContext.PullSubscription, count: int) -> list[Msg]:
    got: list[Msg] = []
    while len(got) < count:
        got += await sub.fetch(count - len(got), timeout=10)
    return got


async def effects(pool: asyncpg.Pool) -> list[str]:
    return [r["order_id"] for r in
            await pool.fetch("SELECT order_id FROM effects ORDER BY order_id")]


async def all_acked(consumer: Consumer) -> None:
    await eventually(consumer.lag, until=lambda lag: lag == 0, what="every message acked")


async def test_a_batch_is_one_claim_and_its_effects_with_no_savepoint(pool, bus) -> None:
    consumer, sent, sub = await start(bus, pool, handler=recording_handler())
    for i in range(5):
        await publish(bus, f"o-{i}")

    await consumer.apply(await fetch(sub, 5))

    assert await sent.kinds() == ["BEGIN", "claim", *["effect"] * 5, "COMMIT"]
    assert await effects(pool) == [f"o-{i}" for i in range(5)]
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = $1",
                               consumer.name) == 5
    assert (consumer.applied_total, consumer.duplicates_total, consumer.fallbacks_total) == (
        5, 0, 0)
    await all_acked(consumer)


async def test_duplicates_seen_before_or_within_the_batch_apply_once(pool, bus) -> None:
    consumer, sent, sub = await start(bus, pool, handler=recording_handler())
    seen = await publish(bus, "a")
    await consumer.apply(await fetch(sub, 1))
    await sent.kinds()

    await publish(bus, "a", seen)  # already in the inbox
    twice = await publish(bus, "b")
    await publish(bus, "b", twice)  # a second copy in the same batch
    await publish(bus, "c")
    await consumer.apply(await fetch(sub, 4))

    assert await sent.kinds() == ["BEGIN", "claim", "effect", "effect", "COMMIT"]
    assert await effects(pool) == ["a", "b", "c"]
    assert (consumer.applied_total, consumer.duplicates_total, consumer.fallbacks_total) == (
        3, 2, 0)
    await all_acked(consumer)


async def test_a_failing_event_is_retried_then_dead_lettered_and_its_neighbours_apply_once(
    pool, bus
) -> None:
    consumer, sent, sub = await start(bus, pool, handler=recording_handler(poison="poison"),
                                max_deliver=3)
    await publish(bus, "good-1")
    poison = await publish(bus, "poison")
    await publish(bus, "good-2")

    await consumer.apply(await fetch(sub, 3))
    kinds = await sent.kinds()
    assert kinds[:2] == ["BEGIN", "claim"] and "ROLLBACK" in kinds and "SAVEPOINT" in kinds
    assert consumer.fallbacks_total == 1
    assert await effects(pool) == ["good-1", "good-2"]
    for delivery in (2, 3):  # naked, so it comes back; the third delivery is the last
        [again] = await fetch(sub, 1)
        assert again.metadata.num_delivered == delivery
        await consumer.apply([again])

    dead = await pool.fetch("SELECT event_id, deliveries, error FROM dead_letter")
    assert [(r["event_id"], r["deliveries"]) for r in dead] == [(poison, 3)]
    assert "poison order poison" in dead[0]["error"]
    assert await effects(pool) == ["good-1", "good-2"]
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", poison) == 1
    assert (consumer.applied_total, consumer.dead_lettered_total, consumer.fallbacks_total) == (
        2, 1, 3)
    await all_acked(consumer)


async def test_an_event_asking_for_a_retry_lands_later_without_holding_up_the_batch(
    pool, bus
) -> None:
    consumer, sent, sub = await start(bus, pool, handler=recording_handler(late="late"))
    await publish(bus, "good-1")
    await publish(bus, "late")
    await publish(bus, "good-2")

    await consumer.apply(await fetch(sub, 3))
    assert await effects(pool) == ["good-1", "good-2"]
    assert consumer.last_error is not None and "NotYet" in consumer.last_error
    await sent.kinds()
    [again] = await fetch(sub, 1)
    await consumer.apply([again])

    assert await sent.kinds() == ["BEGIN", "claim", "effect", "COMMIT"]
    assert await effects(pool) == ["good-1", "good-2", "late"]
    assert (consumer.applied_total, consumer.dead_lettered_total, consumer.fallbacks_total) == (
        3, 0, 1)
    await all_acked(consumer)


async def test_an_undecodable_message_is_dead_lettered_and_the_rest_applied(pool, bus) -> None:
    consumer, sent, sub = await start(bus, pool, handler=recording_handler())
    await publish(bus, "good-1")
    await bus.publish(SUBJECT, b"", {"ce-type": "no id at all"})
    await publish(bus, "good-2")

    await consumer.apply(await fetch(sub, 3))

    assert "claim" not in await sent.kinds(), "straight to the per-event path"
    assert consumer.fallbacks_total == 1
    assert await effects(pool) == ["good-1", "good-2"]
    assert await pool.fetchval("SELECT count(*) FROM dead_letter") == 1
    assert (consumer.applied_total, consumer.dead_lettered_total) == (2, 1)
    await all_acked(consumer)
