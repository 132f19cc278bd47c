"""`python -m bench.rebuild --orders N`: `marketplace analytics rebuild` over N orders' events.

On a Postgres and a NATS of its own (the embedded wheels, started as the tests start them,
removed at the end): the four schemas bootstrapped and migrated, the demo catalog, N orders
written by `marketplace history` inside the outbox's retention (so that every order's events
are in the outbox, published), those outbox rows published to the streams in their order,
then the rebuild run as a process, as an operator runs it. Prints the history's size, the
rebuild's progress lines and summary, its wall time, events/s and peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import psutil

from seeds.seed import seed_if_empty
from services.cli import history
from services.cli.history_model import Plan
from services.common.bus import Bus
from services.common.events import STREAMS
from services.common.migrations import migrate_service
from tests.infra import create_fresh_db, embedded_nats, embedded_postgres

PRODUCERS = ("orders", "payments", "membership")
IN_FLIGHT = 2_000  # publishes awaiting their acks at once


async def publish_outboxes(admin_dsn: str, nats_url: str) -> int:
    """Every outbox row to its stream, in outbox order, with its own headers (Nats-Msg-Id)."""
    bus = await Bus.connect(nats_url, name="bench-rebuild")
    conn = await asyncpg.connect(admin_dsn)
    sent, started = 0, time.monotonic()
    try:
        await bus.ensure_streams()
        for schema in PRODUCERS:
            async with conn.transaction():
                cursor = conn.cursor(f"SELECT subject, payload, headers FROM {schema}.outbox "
                                     "ORDER BY seq", prefetch=IN_FLIGHT)
                chunk: list[asyncpg.Record] = []
                async for row in cursor:
                    chunk.append(row)
                    if len(chunk) == IN_FLIGHT:
                        sent += await _publish(bus, chunk)
                        chunk = []
                sent += await _publish(bus, chunk)
            print(f"  published {schema}: {sent:,} events so far, "
                  f"{sent / (time.monotonic() - started):,.0f}/s", flush=True)
        stored = 0
        for _ in range(60):  # JetStream may still be writing the last ones
            stored = sum([int((await bus.js.stream_info(s)).state.messages)
                          for s in STREAMS])
            if stored >= sent:
                break
            await asyncio.sleep(1)
        if stored != sent:
            raise SystemExit(f"published {sent:,} events, the streams hold {stored:,}")
    finally:
        await conn.close()
        await bus.close()
    return sent


async def _publish(bus: Bus, rows: list[asyncpg.Record]) -> int:
    """Published without waiting for each ack in turn (JetStream's own acks, all awaited)."""
    acks = [await bus.js.publish_async(r["subject"], bytes(r["payload"]),
                                       headers=orjson.loads(r["headers"])) for r in rows]
    await asyncio.gather(*acks)
    return len(rows)


async def prepare(admin_dsn: str, nats_url: str, orders: int, days: float) -> dict[str, str]:
    db = await create_fresh_db(admin_dsn, "rebuild")
    for service in ("orders", "payments", "membership", "analytics"):
        await migrate_service(db.dsn(service), service)
    await seed_if_empty(db.dsns, progress=False)
    until = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    plan = Plan(orders=orders, members=max(1, orders // 20), seed=history.DEFAULT_SEED,
                start=until - timedelta(days=days), until=until)
    loaded = await history.load(db.admin_dsn, plan)
    print(f"history: {orders:,} orders, {loaded.rows:,} rows in {loaded.seconds:.0f} s",
          flush=True)
    events = await publish_outboxes(db.admin_dsn, nats_url)
    print(f"streams: {events:,} events", flush=True)
    return {"analytics": db.dsn("analytics"), "admin": db.admin_dsn}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--days", type=float, default=0.9,
                   help="the history's span; under the outbox retention (24 h), so that "
                   "every order's events are in the outbox")
    p.add_argument("--profile", help="write the rebuild's cProfile statistics to this file")
    args = p.parse_args(list(argv) if argv is not None else None)
    with embedded_postgres() as admin_dsn, embedded_nats() as nats_url:
        dsns = asyncio.run(prepare(admin_dsn, nats_url, args.orders, args.days))
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, *profile, "-m", "services.cli.analytics_rebuild",
                                 "--database-url", dsns["analytics"], "--nats-url", nats_url,
                                 "--admin-dsn", dsns["admin"]])
        # Sampled: the child's ru_maxrss counts the pages it shared with this process
        # between fork and exec.
        watched, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.5)
        took = time.monotonic() - started
        code = proc.returncode
        peak_mib = peak / 2**20
    print(f"rebuild of {args.orders:,} orders: exit {code}, {took:.1f} s wall, "
          f"{args.orders / took:,.0f} orders/s, peak RSS {peak_mib:.0f} MiB")
    return code


if __name__ == "__main__":
    sys.exit(main())
