"""/readyz answers within a balancer's health check even when JetStream does not answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from services.common import db, runtime
from services.common.bus import Bus
from services.common.inbox import Consumer
from services.common.migrations import migrate
from services.common.outbox import OutboxRelay
from services.common.settings import ServiceSettings
from tests.infra import FreshDb

SCHEMA = "orders"


class _Settings(ServiceSettings):
    service_name = "orders"


class _Consumer:
    """Stands in for a consumer whose JetStream lookup hangs (a stream leader election)
    or answers; everything else about it is what /readyz reads."""

    def __init__(self, name: str, lag: int | None) -> None:
        self.name, self.answer = name, lag
        self.hang = asyncio.Event()  # set: the lookup never returns
        self.applied_total = self.duplicates_total = self.fallbacks_total = 0
        self.last_error = None

    async def lag(self) -> int | None:
        if self.hang.is_set():
            await asyncio.Event().wait()
        return self.answer


@pytest.fixture
async def infra(fresh_db, nats_url: str, tmp_path: Path) -> AsyncIterator[runtime.Infra]:
    database: FreshDb = await fresh_db()
    dsn = database.dsn(SCHEMA)
    pool: asyncpg.Pool = await db.create_pool(dsn, schema=SCHEMA, application_name="test")
    async with pool.acquire() as conn:
        await migrate(conn, schema=SCHEMA, service_dir=tmp_path)
    bus = await Bus.connect(nats_url, name="test")
    settings = _Settings(database_url=dsn, nats_url=nats_url)
    yield runtime.Infra(settings=settings, pool=pool, bus=bus,
                        relay=OutboxRelay(dsn, bus, schema=SCHEMA))
    await bus.close()
    await pool.close()


@pytest.mark.timeout(60)  # the old code waited on the hanging lookup for ever
async def test_a_hanging_lag_lookup_reports_the_lag_last_seen_instead_of_waiting(
    infra: runtime.Infra,
) -> None:
    slow, quick = _Consumer("slow", lag=7), _Consumer("quick", lag=0)
    infra.consumers += cast(list[Consumer], [slow, quick])

    first: dict[str, Any] = await infra.readiness()
    assert first["consumers"]["items"]["slow"]["lag"] == 7

    slow.hang.set()
    slow.answer = 99  # never read: the lookup hangs
    during = await infra.readiness()  # would never return if it waited for the lookup

    assert during["consumers"]["items"]["slow"]["lag"] == 7
    assert during["consumers"]["items"]["quick"]["lag"] == 0
    assert all(v["ok"] for v in during.values() if isinstance(v, dict))


@pytest.mark.timeout(60)
async def test_a_pool_busy_with_requests_is_ready_not_down(infra: runtime.Infra) -> None:
    """Under load every pooled connection is taken by checkouts: the replica is busy, and
    failing its probe would take the busiest replicas out of the balancer together."""
    held = [await infra.pool.acquire() for _ in range(infra.pool.get_max_size())]
    try:
        busy = await infra.readiness()
    finally:
        for conn in held:
            await infra.pool.release(conn)
    assert busy["postgres"] == {"ok": True, "busy": True}
    assert (await infra.readiness())["postgres"] == {"ok": True}
