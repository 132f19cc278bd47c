"""Session-wide servers for integration and e2e tests (started lazily, only when asked for).

- `pg_admin_dsn`: superuser DSN of a Postgres for this session (embedded, or TEST_DATABASE_URL).
- `nats_url`: a NATS JetStream for this session (embedded, or TEST_NATS_URL).
- `fresh_db`: `db = await fresh_db()` creates a bootstrapped database of its own (a
  `tests.infra.FreshDb`: `db.dsn("orders")`, `db.auditor_dsn`, `db.admin_dsn`), dropped after
  the test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType

import pytest

from tests.infra import (
    FreshDb,
    create_fresh_db,
    drop_db,
    embedded_nats,
    embedded_postgres,
    reap_stale_servers,
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def _embedded_servers_guard() -> Iterator[None]:
    """Before starting servers: reap those of sessions that were killed. While they run:
    SIGTERM (e.g. from `timeout`) interrupts pytest cleanly, so the teardown still stops them."""
    reap_stale_servers()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def pg_admin_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    request.getfixturevalue("_embedded_servers_guard")
    with embedded_postgres() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if url := os.environ.get("TEST_NATS_URL"):
        yield url
        return
    request.getfixturevalue("_embedded_servers_guard")
    with embedded_nats() as url:
        yield url


@pytest.fixture
async def fresh_db(pg_admin_dsn: str) -> AsyncIterator[Callable[..., Awaitable[FreshDb]]]:
    created: list[FreshDb] = []

    async def make(prefix: str = "test") -> FreshDb:
        db = await create_fresh_db(pg_admin_dsn, prefix)
        created.append(db)
        return db

    yield make
    for db in created:
        await drop_db(pg_admin_dsn, db.name)


_FAMILIES = ("unit", "integration", "e2e", "faults", "security", "deploy", "load", "topology")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its family (its folder under tests/), so `pytest -m` selects it."""
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        family = parts[1] if len(parts) > 2 and parts[0] == "tests" else None
        if family in _FAMILIES:
            item.add_marker(getattr(pytest.mark, family))
