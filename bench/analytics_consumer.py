"""Benchmark: events applied per second by the analytics consumers on a backlog.

Starts its own embedded Postgres and NATS (as the tests do), publishes a backlog of
random orders, payments and members (default 100,000 events), then measures in the
same run:

  raw      fetch + ack from JetStream with no database (the ceiling)
  batch    analytics' BatchConsumer: one transaction, one inbox insert, multi-row upserts
  savepoint the shared inbox.Consumer's fallback path alone: a savepoint and an inbox
           insert per event

Run: .venv/bin/python -m bench.analytics_consumer [--events 100000] [--skip-savepoint]
Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.analytics.batch import BatchConsumer
from services.analytics.bootstrap import CONSUMERS
from services.analytics.handlers import per_event
from services.common import db as common_db
from services.common.bus import Bus
from services.common.events import envelope_headers
from services.common.inbox import Consumer
from services.common.migrations import migrate_service
from tests.infra import create_fresh_db, embedded_nats, embedded_postgres
from tests.integration.analytics.scenario import generate

BATCH = 500


async def publish_backlog(bus: Bus, n_events: int) -> int:
    start = datetime.now(UTC) - timedelta(hours=2)
    events = generate(n_events // 3 + 10, start=start, seed=1).events[:n_events]
    for i in range(0, len(events), 2000):
        await asyncio.gather(*(
            bus.publish(e.subject, e.message.SerializeToString(),
                        envelope_headers(e.subject, e.event_id, "bench"))
            for e in events[i:i + 2000]
        ))
    return len(events)


async def raw_rate(nats_url: str, total: int) -> float:
    """Fetch + ack every message of the three streams, no database."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    began, seen = time.perf_counter(), 0
    for _, (stream, subjects, _) in CONSUMERS.items():
        sub = await js.pull_subscribe("", stream=stream, config=ConsumerConfig(
            name=f"bench-raw-{uuid.uuid4().hex[:6]}", filter_subjects=list(subjects),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000, inactive_threshold=30.0))
        while (await sub.consumer_info()).num_pending:
            for msg in await sub.fetch(BATCH, timeout=2.0):
                await msg.ack()
                seen += 1
        await sub.unsubscribe()
    elapsed = time.perf_counter() - began
    await nc.close()
    assert seen == total, (seen, total)
    return seen / elapsed


class _EachConsumer(Consumer):
    """The shared consumer's careful path alone: a savepoint and an inbox insert per event
    (what a batch that failed falls back to)."""

    async def apply(self, msgs: list[Msg]) -> None:
        async with self.pool.acquire() as conn:
            done = await self.apply_each(conn, msgs)
        await self.settle(msgs, done)


async def consumer_rate(dsn: str, nats_url: str, total: int, *, batch: bool) -> float:
    """Run the three analytics consumers on the backlog until every event is applied."""
    await migrate_service(dsn, "analytics")
    pool = await common_db.create_pool(dsn, schema="analytics", application_name="bench",
                                       min_size=3, max_size=6)
    bus = await Bus.connect(nats_url, name="bench")
    consumers: list[Consumer] = []
    for name, (stream, subjects, handler) in CONSUMERS.items():
        kw = dict(pool=pool, bus=bus, name=f"{name}-{uuid.uuid4().hex[:6]}", stream=stream,
                  subjects=list(subjects), batch_size=BATCH)
        consumers.append(BatchConsumer(batch_handler=handler, **kw) if batch  # type: ignore[arg-type]
                         else _EachConsumer(handler=per_event(handler), **kw))  # type: ignore[arg-type]
    began = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    while sum(c.applied_total + c.duplicates_total for c in consumers) < total:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the consumers' counters are plain ints: poll them
    elapsed = time.perf_counter() - began
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await bus.close()
    await pool.close()
    return total / elapsed


async def main(n_events: int, savepoint: bool) -> None:
    with embedded_postgres() as admin_dsn, embedded_nats() as nats_url:
        bus = await Bus.connect(nats_url, name="bench-publisher")
        await bus.ensure_streams()
        began = time.perf_counter()
        total = await publish_backlog(bus, n_events)
        print(f"backlog: {total} events published in {time.perf_counter() - began:.1f} s")
        await bus.close()
        raw = await raw_rate(nats_url, total)
        print(f"raw JetStream fetch+ack      {raw:10.0f} events/s")
        db = await create_fresh_db(admin_dsn, "bench")
        applied = await consumer_rate(db.dsn("analytics"), nats_url, total, batch=True)
        print(f"analytics batch consumer     {applied:10.0f} events/s  "
              f"({applied / raw:.0%} of raw)")
        if savepoint:
            db2 = await create_fresh_db(admin_dsn, "bench")
            per = await consumer_rate(db2.dsn("analytics"), nats_url, total, batch=False)
            print(f"savepoint-per-event consumer {per:10.0f} events/s  "
                  f"({per / raw:.0%} of raw; batch is {applied / per:.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--skip-savepoint", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.events, not args.skip_savepoint))
