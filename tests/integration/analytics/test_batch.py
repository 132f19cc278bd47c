"""Batch application: duplicates, any delivery order and any batch split give one projection."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from services.analytics.batch import apply_events
from services.analytics.bootstrap import CONSUMERS
from services.analytics.handlers import per_event
from services.common.events import Event, envelope_headers
from services.common.inbox import Handler
from services.common.migrations import migrate_service
from tests.infra import FreshDb
from tests.integration.analytics.factories import confirmation, placed_order
from tests.integration.analytics.scenario import Scenario, dump, generate

MakeDb = Callable[..., Awaitable[FreshDb]]
BY_PREFIX = {subjects[0].split(".", 1)[0]: (name, handler)
             for name, (_, subjects, handler) in CONSUMERS.items()}


def as_events(scenario: Scenario) -> list[Event]:
    return [
        Event(id=e.event_id, subject=e.subject, data=e.message.SerializeToString(),
              headers=envelope_headers(e.subject, e.event_id, "test"))
        for e in scenario.events
    ]


async def projected(
    fresh_db: MakeDb, events: list[Event], *, batch: int | None
) -> dict[str, list[tuple[str, ...]]]:
    """Apply `events` to a new database in batches of `batch`, or one savepoint per event
    through the shared inbox's path (batch=None); the resulting projection."""
    db = await fresh_db("analytics")
    await migrate_service(db.dsn("analytics"), "analytics")
    conn = await asyncpg.connect(db.dsn("analytics"), server_settings={"search_path": "analytics"})
    try:
        size = batch or 1
        for i in range(0, len(events), size):
            chunk = events[i:i + size]
            prefix = chunk[0].subject.split(".", 1)[0]
            consumer, handler = BY_PREFIX[prefix]  # (the batch path splits by stream itself)
            async with conn.transaction():
                if batch is None:
                    await _one_by_one(conn, consumer, chunk[0], per_event(handler))
                else:
                    await _per_stream(conn, chunk)
        return await dump(conn)
    finally:
        await conn.close()


async def _one_by_one(
    conn: asyncpg.Connection, consumer: str, event: Event, handle: Handler
) -> None:
    async with conn.transaction():
        fresh = await conn.fetchval(
            "INSERT INTO inbox (consumer, event_id, subject) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING true", consumer, event.id, event.subject)
        if fresh:
            await handle(conn, event)


async def _per_stream(conn: asyncpg.Connection, chunk: list[Event]) -> None:
    """A batch holds one stream's events, as a consumer fetches them."""
    for prefix, (consumer, handler) in BY_PREFIX.items():
        mine = [e for e in chunk if e.subject.startswith(prefix + ".")]
        if mine:
            await apply_events(conn, consumer, mine, handler)


async def test_duplicates_and_reordering_give_identical_projections(fresh_db: MakeDb) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    events = as_events(generate(150, start=start, seed=5))
    rnd = random.Random(7)
    shuffled = events + rnd.sample(events, len(events) // 3)  # a third delivered twice
    rnd.shuffle(shuffled)

    in_order = await projected(fresh_db, events, batch=200)
    reordered = await projected(fresh_db, shuffled, batch=37)
    one_by_one = await projected(fresh_db, list(reversed(shuffled)), batch=None)

    assert in_order["gmv_minute"] and in_order["order_lines"] and in_order["merchants"]
    assert reordered == in_order
    assert one_by_one == in_order


async def test_a_second_copy_inside_one_batch_applies_once(fresh_db: MakeDb) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    events = [e for e in as_events(generate(5, start=start, seed=3))
              if e.subject.startswith("orders.order.")]
    twice = [e for pair in zip(events, events, strict=True) for e in pair]

    once = await projected(fresh_db, events, batch=100)
    doubled = await projected(fresh_db, twice, batch=100)

    assert doubled == once


async def test_a_batch_locks_reads_and_writes_its_orders_once_each(fresh_db: MakeDb) -> None:
    """Whatever the number of orders and events in a batch: one INSERT, one SELECT ... FOR
    UPDATE and one UPDATE of orders_fact, and the state each order reached."""
    placed = [placed_order(total=1_000 * (n + 1)) for n in range(5)]
    at = datetime.now(UTC) - timedelta(minutes=5)
    events = [Event(id=uuid.uuid4(), subject=subject, data=msg.SerializeToString(),
                    headers=envelope_headers(subject, uuid.uuid4(), "test"))
              for p in placed for subject, msg in (("orders.order.placed", p),
                                                   ("orders.order.confirmed",
                                                    confirmation(p, at=at)))]
    consumer, handler = BY_PREFIX["orders"]
    db = await fresh_db("analytics")
    await migrate_service(db.dsn("analytics"), "analytics")
    conn = await asyncpg.connect(db.dsn("analytics"), server_settings={"search_path": "analytics"})
    sent: list[str] = []
    try:
        with conn.query_logger(lambda q: sent.append(q.query)):
            async with conn.transaction():
                done = await apply_events(conn, consumer, events, handler)
        await asyncio.sleep(0)  # asyncpg delivers query logs with call_soon
        facts = await conn.fetch("SELECT order_id, member_id, status, total FROM orders_fact")
    finally:
        await conn.close()

    touching = [s.split()[0] for s in sent if "orders_fact" in s]
    assert touching == ["INSERT", "SELECT", "UPDATE"]
    assert len(done.applied) == 10
    assert sorted((str(r["order_id"]), str(r["member_id"]), r["status"], r["total"])
                  for r in facts) == sorted((p.order_id, p.member_id, "CONFIRMED",
                                             p.total.amount) for p in placed)
