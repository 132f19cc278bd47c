"""Hourly purges run once per cluster: the replica holding the schema's purge lock does them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common import db, runtime
from services.common.migrations import migrate
from tests.infra import FreshDb

SCHEMA = "orders"


@pytest.fixture
async def pool(fresh_db, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    database: FreshDb = await fresh_db()
    pool = await db.create_pool(database.dsn(SCHEMA), schema=SCHEMA, application_name="test",
                                max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, schema=SCHEMA, service_dir=tmp_path)  # only the shared tables
    yield pool
    await pool.close()


async def _rows(conn: asyncpg.Connection) -> tuple[int, int]:
    return (await conn.fetchval("SELECT count(*) FROM outbox"),
            await conn.fetchval("SELECT count(*) FROM inbox"))


async def test_one_replica_purges_while_another_holds_the_lock_waits_its_turn(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        for age in ("30 days", "1 minute"):  # one long published, one recent
            await conn.execute(
                "INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers, "
                "published_at) VALUES ($1, 's', 'a', '', '{}', now() - $2::text::interval)",
                uuid.uuid4(), age)
            await conn.execute(
                "INSERT INTO inbox (consumer, event_id, subject, processed_at) "
                "VALUES ('c', $1, 's', now() - $2::text::interval)", uuid.uuid4(), age)
        assert await _rows(conn) == (2, 2)

    async with pool.acquire() as other, other.transaction():  # another replica is purging
        await other.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"purge:{SCHEMA}")
        assert await runtime.purge(pool, schema=SCHEMA) is False
        async with pool.acquire() as conn:
            assert await _rows(conn) == (2, 2)

    assert await runtime.purge(pool, schema=SCHEMA) is True
    async with pool.acquire() as conn:
        assert await _rows(conn) == (1, 1)  # only what retention no longer keeps
