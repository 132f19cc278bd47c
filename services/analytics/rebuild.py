"""Rebuild every projection by replaying the streams from the start, then swap it in.

The replay writes into a shadow schema (`analytics_rebuild`, same tables, its own inbox)
through the very handlers the live consumers run, so the two cannot drift apart. The swap
is one transaction that first locks the live inbox (no live batch can commit meanwhile),
replays whatever arrived since, and then replaces the live projections and the live
consumers' inbox rows with the shadow's. After it the live consumers skip every event the
rebuild applied and apply every later one: still exactly once. Events that live analytics
dead-lettered are skipped by the rebuild too, so the result equals the live projections.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.analytics.batch import apply_events
from services.analytics.bootstrap import CONSUMERS
from services.analytics.handlers import BatchHandler
from services.common.inbox import to_event

SHADOW = "analytics_rebuild"
LIVE = "analytics"
PROJECTIONS = (
    "orders_fact", "gmv_minute", "gmv_second", "product_sales", "order_lines", "members_dim",
    "payments_fact", "merchants",
)
BATCH = 500

Progress = Callable[[str, int, int], None]  # stream, messages replayed, messages in stream


class RebuildError(RuntimeError):
    """The rebuild cannot go on; the live projections are untouched."""


@dataclass
class Replay:
    """One stream replayed from its first message by an ephemeral consumer."""

    consumer: str
    stream: str
    handler: BatchHandler
    sub: JetStreamContext.PullSubscription
    total: int
    done: int = 0


async def ensure_shadow_schema(conn: asyncpg.Connection, admin_dsn: str | None) -> None:
    """The shadow schema, owned by the analytics role (only its creation needs an admin)."""
    if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", SHADOW):
        return
    if admin_dsn is None:
        raise RebuildError(f"schema {SHADOW} does not exist and no admin DSN was given to "
                           "create it (--admin-dsn or MARKETPLACE_ADMIN_DSN)")
    role = await conn.fetchval("SELECT current_user")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE SCHEMA IF NOT EXISTS {SHADOW} AUTHORIZATION "{role}"')
    finally:
        await admin.close()


async def prepare_shadow(conn: asyncpg.Connection) -> None:
    """Empty shadow tables shaped like the live ones; dead-lettered events pre-claimed."""
    for table in (*PROJECTIONS, "inbox"):
        await conn.execute(f"DROP TABLE IF EXISTS {SHADOW}.{table}")
        await conn.execute(
            f"CREATE TABLE {SHADOW}.{table} (LIKE {LIVE}.{table} INCLUDING ALL)"
        )
    await conn.execute(
        f"INSERT INTO {SHADOW}.inbox (consumer, event_id, subject) "
        f"SELECT consumer, event_id, subject FROM {LIVE}.dead_letter "
        "WHERE consumer = ANY($1::text[]) ON CONFLICT DO NOTHING",
        list(CONSUMERS),
    )


async def open_replays(js: JetStreamContext) -> list[Replay]:
    replays = []
    for consumer, (stream, subjects, handler) in CONSUMERS.items():
        info = await js.stream_info(stream)
        sub = await js.pull_subscribe(
            "", stream=stream,
            config=ConsumerConfig(
                name=f"analytics-rebuild-{uuid.uuid4().hex[:8]}",
                filter_subjects=list(subjects),
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.ALL,
                inactive_threshold=60.0, max_ack_pending=-1,
            ),
        )
        replays.append(Replay(consumer, stream, handler, sub, int(info.state.messages)))
    return replays


async def catch_up(conn: asyncpg.Connection, replay: Replay, progress: Progress) -> None:
    """Apply the stream's messages to the shadow until none is pending, a batch at a time."""
    while True:
        if (await replay.sub.consumer_info()).num_pending == 0:
            return
        try:
            msgs = await replay.sub.fetch(BATCH, timeout=1.0)
        except (TimeoutError, nats.errors.TimeoutError):
            return  # nothing left to deliver
        async with conn.transaction():
            await apply_events(conn, replay.consumer, [to_event(m) for m in msgs],
                               replay.handler)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        replay.done += len(msgs)
        replay.total = max(replay.total, replay.done)
        progress(replay.stream, replay.done, replay.total)
        if msgs[-1].metadata.num_pending == 0:
            return


async def swap(conn: asyncpg.Connection, replays: list[Replay], progress: Progress) -> None:
    """Under the live inbox lock: the last events, then shadow → live in one commit."""
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '30s'")
        await conn.execute(f"LOCK TABLE {LIVE}.inbox IN EXCLUSIVE MODE")
        for replay in replays:
            await catch_up(conn, replay, progress)
        await conn.execute("TRUNCATE " + ", ".join(f"{LIVE}.{t}" for t in PROJECTIONS))
        for table in PROJECTIONS:
            await conn.execute(f"INSERT INTO {LIVE}.{table} SELECT * FROM {SHADOW}.{table}")
        await conn.execute(
            f"DELETE FROM {LIVE}.inbox WHERE consumer = ANY($1::text[])", list(CONSUMERS)
        )
        await conn.execute(f"INSERT INTO {LIVE}.inbox SELECT * FROM {SHADOW}.inbox")


async def rebuild(
    dsn: str, js: JetStreamContext, *, admin_dsn: str | None = None,
    progress: Progress = lambda stream, done, total: None,
) -> dict[str, int]:
    """Replay every stream into the shadow, swap it in; the messages replayed per stream."""
    conn = await asyncpg.connect(dsn)
    replays: list[Replay] = []
    try:
        await ensure_shadow_schema(conn, admin_dsn)
        await prepare_shadow(conn)
        # Unqualified names in the handlers now resolve to the shadow tables only.
        await conn.execute(f"SET search_path = {SHADOW}")
        replays = await open_replays(js)
        for replay in replays:
            progress(replay.stream, 0, replay.total)
            await catch_up(conn, replay, progress)
        await swap(conn, replays, progress)
        return {r.stream: r.done for r in replays}
    finally:
        for replay in replays:
            await replay.sub.unsubscribe()
        for table in (*PROJECTIONS, "inbox"):
            await conn.execute(f"DROP TABLE IF EXISTS {SHADOW}.{table}")
        await conn.close()
