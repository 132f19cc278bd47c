"""Purges run once per cluster, in small batches, and delete exactly what retention says."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common import db, purge
from services.common.migrations import migrate
from services.common.settings import ServiceSettings
from tests.infra import FreshDb

SCHEMA = "orders"
LOCK = f"purge:{SCHEMA}"
# Retention as an operator sets it: outbox 2 h, inbox 8 days, retried dead letters 3 days.
SETTINGS = ServiceSettings(database_url="postgresql://unused", outbox_retention_h=2,
                           inbox_retention_days=8, dead_letter_retention_days=3)


@pytest.fixture
async def pool(fresh_db, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    database: FreshDb = await fresh_db()
    pool = await db.create_pool(database.dsn(SCHEMA), schema=SCHEMA, application_name="test",
                                max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, schema=SCHEMA, service_dir=tmp_path)  # only the shared tables
    yield pool
    await pool.close()


async def _outbox(conn: asyncpg.Connection, published_ago: str | None) -> None:
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers, published_at) "
        "VALUES ($1, 's', 'a', '', '{}', now() - $2::text::interval)", uuid.uuid4(),
        published_ago)


async def _inbox(conn: asyncpg.Connection, ago: str) -> None:
    await conn.execute("INSERT INTO inbox (consumer, event_id, subject, processed_at) "
                       "VALUES ('c', $1, 's', now() - $2::text::interval)", uuid.uuid4(), ago)


async def _dead_letter(conn: asyncpg.Connection, failed_ago: str, retried_ago: str | None
                       ) -> None:
    await conn.execute(
        "INSERT INTO dead_letter (consumer, event_id, subject, payload, headers, error, "
        "deliveries, failed_at, retried_at) VALUES ('c', $1, 's', '', '{}', 'boom', 5, "
        "now() - $2::text::interval, now() - $3::text::interval)",
        uuid.uuid4(), failed_ago, retried_ago)


async def _left(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """What each table still holds, by the age its retention is judged on."""
    return {
        "outbox": [r[0] for r in await conn.fetch(
            "SELECT coalesce(round(extract(epoch FROM now() - published_at) / 3600)::text, "
            "'pending') FROM outbox ORDER BY seq")],
        "inbox": [r[0] for r in await conn.fetch(
            "SELECT round(extract(epoch FROM now() - processed_at) / 86400)::text FROM inbox "
            "ORDER BY processed_at DESC")],
        "dead_letter": [r[0] for r in await conn.fetch(
            "SELECT coalesce(round(extract(epoch FROM now() - retried_at) / 86400)::text, "
            "'never retried') FROM dead_letter ORDER BY id")],
    }


async def test_the_purge_deletes_exactly_what_retention_no_longer_keeps_batch_by_batch(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        for ago in ("5 hours", "3 hours", "1 hour"):
            await _outbox(conn, ago)
        await _outbox(conn, None)  # still pending, however old: never purged
        for ago in ("30 days", "9 days", "9 days", "7 days", "1 minute"):
            await _inbox(conn, ago)
        await _dead_letter(conn, "40 days", None)  # never retried: an event still owed
        await _dead_letter(conn, "40 days", "4 days")
        await _dead_letter(conn, "40 days", "2 days")

    # Batches of one: every expired row still goes, in a transaction of its own each.
    purged = await purge.purge_all(pool, purge.shared(SETTINGS), lock=LOCK, batch=1)

    assert purged == {"outbox": 2, "inbox": 3, "dead_letter": 1}
    async with pool.acquire() as conn:
        assert await _left(conn) == {"outbox": ["1", "pending"], "inbox": ["0", "7"],
                                     "dead_letter": ["never retried", "2"]}


async def test_one_replica_purges_while_another_holds_the_lock_waits_its_turn(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await _outbox(conn, "30 days")
        await _inbox(conn, "30 days")

    async with pool.acquire() as other, other.transaction():  # another replica is purging
        await other.execute("SELECT pg_advisory_xact_lock(hashtext($1))", LOCK)
        assert await purge.purge_all(pool, purge.shared(SETTINGS), lock=LOCK) is None
        async with pool.acquire() as conn:
            assert await _left(conn) == {"outbox": ["720"], "inbox": ["30"], "dead_letter": []}

    assert await purge.purge_all(pool, purge.shared(SETTINGS), lock=LOCK) == {
        "outbox": 1, "inbox": 1, "dead_letter": 0}
