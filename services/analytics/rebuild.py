"""Rebuild every projection by replaying the streams from the start, then swap it in.

The replay writes into a shadow schema (`analytics_rebuild`, same tables, its own inbox)
through the very handlers the live consumers run, so the two cannot drift apart. It holds
no lock on the live tables and streams a batch at a time (a fetch, a transaction, an ack),
so the live consumers go on applying events and memory stays flat however long the
streams are. The three streams are replayed at once, each on its own connection. Each
replay's ephemeral consumer is its watermark: whatever arrives during the replay is caught
up in further rounds, still without a lock, until little is left.

The swap is then one short transaction. It locks `orders_fact` and the live inbox in
EXCLUSIVE mode (the order the live consumers take them; readers go on), applies the few
events that arrived since the watermark, and replaces each live table by its shadow with
DROP TABLE and ALTER TABLE ... SET SCHEMA: catalogue changes, not a copy, so the live
consumers wait for a moment whatever the history's size. The shadow's indexes were given
the live names when it was made, and the live tables' grants (the auditor's SELECT from
dbsetup's default privileges) are granted again on the new ones. The shadow inbox replaces
the live one: it holds every event the streams still hold, which is every event a live
consumer could still be delivered, so after the swap the live consumers skip every event
the rebuild applied and apply every later one: still exactly once. Events that live
analytics dead-lettered are skipped by the rebuild too, so the result equals the live
projections.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import nats.errors
from nats.aio.msg import Msg
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
SWAPPED = (*PROJECTIONS, "inbox")
# The live consumers lock orders_fact rows before they claim inbox rows: the swap takes
# its locks in the same order, so that neither waits on the other in a cycle.
FIRST_LOCKED = ("orders_fact", "inbox")
BATCH = 2_000
# Catch-up rounds run without a lock until a round finds no more than this many new events;
# the rest is applied under the lock.
CLOSE_ENOUGH = 2_000
MAX_ROUNDS = 10
# A replay's consumer idles while the other streams are replayed and between catch-up
# rounds: JetStream must not delete it meanwhile (the rebuild deletes it when it ends).
IDLE_S = 6 * 3600.0
FETCH_WAIT_S = 5.0
ACK_WAIT_S = 600.0

Progress = Callable[[str, int, int], None]  # stream, messages replayed, messages in stream
_INDEX_HEAD = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON \S+ ")


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


@dataclass
class Rebuilt:
    """What a rebuild replayed, per stream, and how long the swap held the live consumers."""

    replayed: dict[str, int] = field(default_factory=dict)
    under_lock: int = 0  # events applied while the live consumers waited
    held_s: float = 0.0


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


async def _indexes(conn: asyncpg.Connection, schema: str, table: str) -> dict[str, list[str]]:
    """The table's index names by definition (without name, schema and table)."""
    found: dict[str, list[str]] = {}
    for row in await conn.fetch("SELECT indexname, indexdef FROM pg_indexes "
                                "WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname",
                                schema, table):
        found.setdefault(_INDEX_HEAD.sub(r"CREATE \1INDEX ON ", row["indexdef"]), []).append(
            row["indexname"])
    return found


async def _name_indexes_as_live(conn: asyncpg.Connection, table: str) -> None:
    """LIKE names the copied indexes after their columns: give each the live one's name,
    which later migrations and the plans refer to, and which it keeps after the swap."""
    live = await _indexes(conn, LIVE, table)
    for definition, names in (await _indexes(conn, SHADOW, table)).items():
        for name, wanted in zip(names, live.get(definition, []), strict=False):
            if name != wanted:
                await conn.execute(f'ALTER INDEX {SHADOW}."{name}" RENAME TO "{wanted}"')


async def prepare_shadow(conn: asyncpg.Connection) -> None:
    """Empty shadow tables shaped like the live ones; dead-lettered events pre-claimed."""
    owners = set()
    for table in SWAPPED:
        owners.add(await conn.fetchval("SELECT tableowner FROM pg_tables "
                                       "WHERE schemaname = $1 AND tablename = $2", LIVE, table))
        await conn.execute(f"DROP TABLE IF EXISTS {SHADOW}.{table}")
        await conn.execute(
            f"CREATE TABLE {SHADOW}.{table} (LIKE {LIVE}.{table} INCLUDING ALL)"
        )
        await _name_indexes_as_live(conn, table)
    if owners != {await conn.fetchval("SELECT current_user")}:
        raise RebuildError(f"the live tables belong to {sorted(owners)}: run the rebuild as "
                           "their owner (the analytics role)")
    await conn.execute(
        f"INSERT INTO {SHADOW}.inbox (consumer, event_id, subject) "
        f"SELECT consumer, event_id, subject FROM {LIVE}.dead_letter "
        "WHERE consumer = ANY($1::text[]) ON CONFLICT DO NOTHING",
        list(CONSUMERS),
    )


async def open_replays(js: JetStreamContext) -> list[Replay]:
    replays = []
    for consumer, (stream, subjects, handler) in CONSUMERS.items():
        sub = await js.pull_subscribe(
            "", stream=stream,
            config=ConsumerConfig(
                name=f"analytics-rebuild-{uuid.uuid4().hex[:8]}",
                filter_subjects=list(subjects),
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.ALL,
                inactive_threshold=IDLE_S, max_ack_pending=-1,
                # A fetched batch waits while the other streams' batches are written: not
                # redelivered meanwhile (the inbox would skip the copies, at a cost).
                ack_wait=ACK_WAIT_S,
            ),
        )
        pending = (await sub.consumer_info()).num_pending  # only the subjects replayed
        replays.append(Replay(consumer, stream, handler, sub, int(pending or 0)))
    return replays


async def _fetch(replay: Replay, batch: int) -> list[Msg]:
    try:
        return list(await replay.sub.fetch(batch, timeout=FETCH_WAIT_S))
    except (TimeoutError, nats.errors.TimeoutError):
        return []


async def catch_up(
    conn: asyncpg.Connection, replay: Replay, progress: Progress, *, batch: int = BATCH
) -> int:
    """Apply the stream's messages to the shadow until the consumer has none pending, a
    batch at a time (each its own transaction, or the caller's); returns how many.

    The next batch is fetched (and parsed) while the current one is written. Only the
    consumer's own count ends it: a fetch can time out while the loop is busy with another
    stream, and under the swap's lock every event up to the stream's end must be in."""
    before = replay.done
    coming: asyncio.Future[list[Msg]] | None = None
    while True:
        if coming is None:
            if (await replay.sub.consumer_info()).num_pending == 0:
                break
            coming = asyncio.ensure_future(_fetch(replay, batch))
        msgs, coming = await coming, None
        if not msgs:
            continue
        left = msgs[-1].metadata.num_pending or 0
        # Fetched ahead only when more is known to be there: a fetch is never abandoned.
        if left:
            coming = asyncio.ensure_future(_fetch(replay, batch))
        try:
            async with conn.transaction():
                await apply_events(conn, replay.consumer, [to_event(m) for m in msgs],
                                   replay.handler)
        except BaseException:
            if coming is not None:
                await asyncio.gather(coming, return_exceptions=True)
            raise
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        replay.done += len(msgs)
        replay.total = max(replay.total, replay.done + left)
        progress(replay.stream, replay.done, replay.total)
    return replay.done - before


async def _replay_all(dsn: str, replays: list[Replay], progress: Progress, batch: int) -> int:
    """Every stream caught up at once, each on a connection of its own; the events applied.

    The shadow is thrown away if anything fails (and the replay starts again from the
    first message), so its commits need not wait for the disk."""
    async def one(replay: Replay) -> int:
        conn = await asyncpg.connect(dsn, server_settings={
            "search_path": SHADOW, "synchronous_commit": "off",
            "application_name": "analytics-rebuild"})
        try:
            return await catch_up(conn, replay, progress, batch=batch)
        finally:
            await conn.close()

    return sum(await asyncio.gather(*(one(r) for r in replays)))


async def _replace(conn: asyncpg.Connection, table: str) -> None:
    """The live table dropped, its shadow moved in under its name with its grants."""
    grants = await conn.fetch(
        "SELECT a.privilege_type, a.grantee::regrole::text AS grantee "
        "FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = $1::regclass AND a.grantee <> c.relowner AND a.grantee <> 0",
        f"{LIVE}.{table}")
    await conn.execute(f"DROP TABLE {LIVE}.{table}")
    await conn.execute(f"ALTER TABLE {SHADOW}.{table} SET SCHEMA {LIVE}")
    for grant in grants:
        await conn.execute(f"GRANT {grant['privilege_type']} ON {LIVE}.{table} "
                           f"TO {grant['grantee']}")


async def swap(conn: asyncpg.Connection, replays: list[Replay], progress: Progress,
               *, batch: int = BATCH) -> tuple[int, float]:
    """Under the live locks: the last events, then shadow → live in one commit; returns
    the events applied under the lock and the seconds the live consumers were held."""
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '30s'")
        await conn.execute("LOCK TABLE " + ", ".join(f"{LIVE}.{t}" for t in FIRST_LOCKED)
                           + " IN EXCLUSIVE MODE")
        held = time.monotonic()
        applied = 0
        for replay in replays:
            applied += await catch_up(conn, replay, progress, batch=batch)
        # Readers (reports, the dashboard) wait from here on: a few catalogue changes.
        await conn.execute("LOCK TABLE " + ", ".join(f"{LIVE}.{t}" for t in SWAPPED)
                           + " IN ACCESS EXCLUSIVE MODE")
        for table in SWAPPED:
            await _replace(conn, table)
    return applied, time.monotonic() - held


async def rebuild(
    dsn: str, js: JetStreamContext, *, admin_dsn: str | None = None,
    progress: Progress = lambda stream, done, total: None, batch: int = BATCH,
) -> Rebuilt:
    """Replay every stream into the shadow, catch up, swap it in."""
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
        await _replay_all(dsn, replays, progress, batch)
        # The streams went on growing meanwhile: catch up again while that is worth it.
        for _ in range(MAX_ROUNDS):
            if await _replay_all(dsn, replays, progress, batch) <= CLOSE_ENOUGH:
                break
        for table in SWAPPED:  # the planner's statistics, before the hot paths read them
            await conn.execute(f"ANALYZE {SHADOW}.{table}")
        under_lock, held_s = await swap(conn, replays, progress, batch=batch)
        return Rebuilt({r.stream: r.done for r in replays}, under_lock, held_s)
    finally:
        for replay in replays:
            await replay.sub.unsubscribe()
        for table in SWAPPED:  # left only when the swap did not happen
            await conn.execute(f"DROP TABLE IF EXISTS {SHADOW}.{table}")
        await conn.close()
