"""The delivery guarantees every service relies on, against real Postgres and JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from marketplace.events.v1 import events_pb2

from services.cli.dbsetup import with_database
from services.common import db
from services.common.bus import Bus
from services.common.events import Event, envelope_headers
from services.common.inbox import Consumer
from services.common.migrations import migrate
from services.common.outbox import OutboxRelay, add_event
from services.common.runtime import Infra
from services.common.settings import ServiceSettings
from tests.helpers import eventually
from tests.infra import FreshDb

SCHEMA = "orders"  # any service schema will do; the tests use the orders role


@pytest.fixture
async def database(fresh_db) -> FreshDb:
    return await fresh_db()


@pytest.fixture
async def orders_pool(database: FreshDb, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    dsn = database.dsn(SCHEMA)
    pool = await db.create_pool(dsn, schema=SCHEMA, application_name="test", max_size=5)
    async with pool.acquire() as conn:
        await migrate(conn, schema=SCHEMA, service_dir=tmp_path)  # only the shared tables
        await conn.execute("CREATE TABLE effects (event_id uuid, order_id text)")
    yield pool
    await pool.close()


@contextlib.asynccontextmanager
async def running(coro) -> AsyncIterator[asyncio.Task]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def place(pool: asyncpg.Pool, order_id: str, *, commit: bool = True) -> uuid.UUID:
    msg = events_pb2.OrderCancelled(order_id=order_id, reason="test")
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        event_id = await add_event(
            conn, source="orders", subject="orders.order.cancelled",
            aggregate_id=order_id, message=msg,
        )
        await (tx.commit() if commit else tx.rollback())
    return event_id


async def stream_messages(bus: Bus, count: int) -> list:
    sub = await bus.js.pull_subscribe("orders.>", stream="ORDERS")
    got: list = []
    while len(got) < count:
        got += await sub.fetch(count - len(got), timeout=5)
    await sub.unsubscribe()
    return got


async def test_committed_event_is_published_once_with_its_envelope(orders_pool, bus, database):
    relay = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA, poll_s=0.2)
    async with running(relay.run()):
        event_id = await place(orders_pool, "o-1")
        await place(orders_pool, "o-rolled-back", commit=False)
        await eventually(lambda: _pending(orders_pool), until=lambda n: n == 0, what="drain")
        [msg] = await stream_messages(bus, 1)
    assert msg.headers["Nats-Msg-Id"] == str(event_id)
    assert msg.headers["ce-type"] == "marketplace.orders.order.cancelled.v1"
    decoded = events_pb2.OrderCancelled.FromString(msg.data)
    assert decoded.order_id == "o-1"
    info = await bus.js.stream_info("ORDERS")
    assert info.state.messages == 1, "the rolled-back event must never be published"


async def _pending(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")


async def test_events_of_one_aggregate_keep_their_order(orders_pool, bus, database):
    for i in range(30):
        await place(orders_pool, f"agg-{i % 3}")
    relay = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA, batch_size=7)
    async with running(relay.run()):
        await eventually(lambda: _pending(orders_pool), until=lambda n: n == 0, what="drain")
    msgs = await stream_messages(bus, 30)
    seq_by_id = {
        str(r["event_id"]): r["seq"]
        for r in await orders_pool.fetch("SELECT event_id, seq FROM outbox")
    }
    for agg in ("agg-0", "agg-1", "agg-2"):
        seqs = [
            seq_by_id[m.headers["ce-id"]]
            for m in msgs
            if events_pb2.OrderCancelled.FromString(m.data).order_id == agg
        ]
        assert seqs == sorted(seqs) and len(seqs) == 10


async def test_only_one_relay_publishes_at_a_time(orders_pool, bus, database):
    first = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA, poll_s=0.1)
    second = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA, poll_s=0.1)
    async with running(first.run()), running(second.run()):
        await eventually(lambda: _leaders(first, second), until=lambda n: n == 1, what="leader")
        for i in range(20):
            await place(orders_pool, f"o-{i}")
        await eventually(lambda: _pending(orders_pool), until=lambda n: n == 0, what="drain")
        assert [first.is_leader, second.is_leader].count(True) == 1
    info = await bus.js.stream_info("ORDERS")
    assert info.state.messages == 20


async def _leaders(*relays: OutboxRelay) -> int:
    return sum(r.is_leader for r in relays)


async def test_relay_publishes_what_was_committed_while_nats_was_down(
    orders_pool, database, tmp_path: Path, nats_factory
):
    server = await nats_factory(tmp_path / "nats")
    bus = await Bus.connect(server.url, name="test-outage")
    await bus.ensure_streams()
    relay = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA, poll_s=0.2)
    async with running(relay.run()):
        await place(orders_pool, "before")
        await eventually(lambda: _pending(orders_pool), until=lambda n: n == 0, what="drain")
        await server.stop()
        ids = [await place(orders_pool, f"during-{i}") for i in range(5)]
        assert await _pending(orders_pool) == 5
        await server.start()
        await eventually(
            lambda: _pending(orders_pool), until=lambda n: n == 0, timeout_s=40, what="redrain"
        )
    msgs = await stream_messages(bus, 6)
    assert {m.headers["ce-id"] for m in msgs} >= {str(i) for i in ids}
    assert (await bus.js.stream_info("ORDERS")).state.messages == 6
    await bus.close()


def _handler_recording(fail_on: set[str] | None = None):
    async def handle(conn: asyncpg.Connection, event: Event) -> None:
        order_id = event.message().order_id
        if fail_on and order_id in fail_on:
            raise RuntimeError(f"poison order {order_id}")
        await conn.execute(
            "INSERT INTO effects (event_id, order_id) VALUES ($1, $2)", event.id, order_id
        )

    return handle


async def publish_raw(bus: Bus, order_id: str, event_id: uuid.UUID) -> None:
    headers = envelope_headers("orders.order.cancelled", event_id, "orders")
    headers["Nats-Msg-Id"] = str(uuid.uuid4())  # a redelivery JetStream cannot de-duplicate
    body = events_pb2.OrderCancelled(order_id=order_id).SerializeToString()
    await bus.publish("orders.order.cancelled", body, headers)


async def test_duplicate_delivery_has_one_effect(orders_pool, bus):
    consumer = Consumer(
        pool=orders_pool, bus=bus, name="test-dup", stream="ORDERS",
        subjects=["orders.order.cancelled"], handler=_handler_recording(),
    )
    same = uuid.uuid4()
    await publish_raw(bus, "o-1", same)
    await publish_raw(bus, "o-1", same)
    await publish_raw(bus, "o-2", uuid.uuid4())
    async with running(consumer.run()):
        await eventually(lambda: _count(orders_pool), until=lambda n: n >= 2, what="applied")
        await eventually(
            lambda: consumer.lag(), until=lambda lag: lag == 0, what="consumer caught up"
        )
    rows = await orders_pool.fetch("SELECT order_id FROM effects ORDER BY order_id")
    assert [r["order_id"] for r in rows] == ["o-1", "o-2"]
    assert consumer.duplicates_total == 1


async def _count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM effects")


async def test_poison_event_goes_to_dead_letter_and_the_rest_keeps_flowing(orders_pool, bus):
    consumer = Consumer(
        pool=orders_pool, bus=bus, name="test-poison", stream="ORDERS",
        subjects=["orders.order.cancelled"], handler=_handler_recording({"poison"}),
        max_deliver=3, ack_wait_s=2,
    )
    poison_id = uuid.uuid4()
    await publish_raw(bus, "good-1", uuid.uuid4())
    await publish_raw(bus, "poison", poison_id)
    await publish_raw(bus, "good-2", uuid.uuid4())
    async with running(consumer.run()):
        await eventually(
            lambda: orders_pool.fetchval("SELECT count(*) FROM dead_letter"),
            until=lambda n: n == 1, timeout_s=30, what="dead letter",
        )
        await eventually(lambda: _count(orders_pool), until=lambda n: n == 2, what="good ones")
    dead = await orders_pool.fetchrow("SELECT * FROM dead_letter")
    assert dead["event_id"] == poison_id
    assert "poison order poison" in dead["error"]
    assert dead["deliveries"] == 3
    orders = {r["order_id"] for r in await orders_pool.fetch("SELECT order_id FROM effects")}
    assert orders == {"good-1", "good-2"}


async def test_events_sent_while_postgres_refuses_the_consumer_apply_once_it_is_back(
    orders_pool, bus, database, pg_admin_dsn
):
    # JetStream gives up on an event after max_deliver + 1 = 3 deliveries, 1 s apart: the
    # outage outlasts that several times over, so the consumer's attempts while it lasts
    # must not each spend a delivery.
    consumer = Consumer(
        pool=orders_pool, bus=bus, name="test-pg-outage", stream="ORDERS",
        subjects=["orders.order.cancelled"], handler=_handler_recording(),
        max_deliver=2, ack_wait_s=1.0,
    )
    admin = await asyncpg.connect(with_database(pg_admin_dsn, "postgres"))
    try:
        async with running(consumer.run()):
            await publish_raw(bus, "before", uuid.uuid4())
            await eventually(lambda: _count(orders_pool), until=lambda n: n == 1, what="before")
            await _allow_connections(admin, database.name, False)
            try:
                for i in range(3):
                    await publish_raw(bus, f"during-{i}", uuid.uuid4())
                await asyncio.sleep(8)  # the outage, not a check
            finally:
                await _allow_connections(admin, database.name, True)
            await eventually(lambda: _count(orders_pool), until=lambda n: n >= 4, timeout_s=30,
                             what="the events sent during the outage applied")
            await eventually(consumer.lag, until=lambda lag: lag == 0, what="all acked")
    finally:
        await admin.close()
    rows = await orders_pool.fetch("SELECT order_id FROM effects ORDER BY order_id")
    assert [r["order_id"] for r in rows] == ["before", "during-0", "during-1", "during-2"]
    assert await orders_pool.fetchval("SELECT count(*) FROM dead_letter") == 0


async def _allow_connections(admin: asyncpg.Connection, database: str, allow: bool) -> None:
    """Let the database's roles connect again, or refuse them and end their sessions: a
    Postgres outage for this test's database alone, the shared server staying up."""
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
    if not allow:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", database)


async def test_a_batch_is_marked_published_by_the_statement_that_asks_for_the_next(
    orders_pool, bus, database
):
    for i in range(3):
        await place(orders_pool, f"mark-{i}")
    relay = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA)
    sent: list[str] = []
    async with orders_pool.acquire() as conn:
        # asyncpg looks up an array type on a connection's first use of it; not the relay's.
        await conn.fetchval("SELECT $1::bigint[]", [])
        with conn.query_logger(lambda q: sent.append(q.query)):
            assert await relay.drain(conn) == 3
            await asyncio.sleep(0)  # asyncpg hands query logs over with call_soon
            assert len(sent) == 1, sent  # one round trip for the whole batch
            assert await _pending(orders_pool) == 3, "published, marked by the next statement"

            assert await relay.drain(conn) == 0
            await asyncio.sleep(0)
            assert len(sent) == 2, sent
    assert await _pending(orders_pool) == 0
    assert len(await stream_messages(bus, 3)) == 3


async def test_a_relay_that_stops_marks_what_it_published(orders_pool, bus, database):
    relay = OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA, poll_s=30)
    async with running(relay.run()):
        await eventually(lambda: _leaders(relay), until=lambda n: n == 1, what="leader")
        await place(orders_pool, "o-stopping")
        await eventually(lambda: _published(relay), until=lambda n: n == 1, what="published")
        assert await _pending(orders_pool) == 1  # the next round would mark it (in 30 s)
    assert await _pending(orders_pool) == 0  # marked on the way out: a successor skips it


async def _published(relay: OutboxRelay) -> int:
    return relay.published_total


async def test_relay_publish_errors_leave_the_replica_ready_and_a_standby_clean(
    orders_pool, bus, database
):
    """As while a NATS cluster elects a new stream leader: the relay's publishes fail (here
    the stream is gone) with the connection up. /readyz shows the error but stays ready:
    every replica publishes to the same NATS, so leaving the balancer mends nothing and
    stops checkouts, which do not wait for the relay. Once another replica holds the lock,
    this one is a standby and carries no error (it used to keep it, unready, for good)."""
    infra = Infra(settings=ServiceSettings(database_url=database.dsn(SCHEMA)), pool=orders_pool,
                  bus=bus, relay=OutboxRelay(database.dsn(SCHEMA), bus, schema=SCHEMA,
                                             poll_s=0.1))  # fmt: skip
    await bus.js.delete_stream("ORDERS")
    await place(orders_pool, "o-unpublishable")
    async with running(infra.relay.run()):
        await eventually(lambda: _error(infra.relay), what="the relay's publish error")
        detail = await infra.readiness()
        assert detail["outbox"]["error"] and detail["nats"]["ok"], detail
        assert all(v["ok"] for v in detail.values() if isinstance(v, dict)), detail

        other = await asyncpg.connect(database.dsn(SCHEMA))  # another replica's relay
        try:
            await eventually(lambda: other.fetchval(LOCK, f"outbox:{SCHEMA}"), what="the lock")
            await eventually(lambda: _standby_without_error(infra.relay), what="a clean standby")
        finally:
            await other.close()
        await bus.ensure_streams()
        await eventually(lambda: _pending(orders_pool), until=lambda n: n == 0, what="drain")


LOCK = "SELECT pg_try_advisory_lock(hashtext($1))"


async def _error(relay: OutboxRelay) -> str | None:
    return relay.last_error


async def _standby_without_error(relay: OutboxRelay) -> bool:
    return not relay.is_leader and relay.last_error is None
