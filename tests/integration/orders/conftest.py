"""Fixtures: the three services on real ports over one fresh database and the session NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.helpers import reset_streams
from tests.infra import FreshDb
from tests.integration.orders.harness import Stack, stack


@pytest.fixture
async def services(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Nothing running yet: the test starts what it needs (`start_membership`, ...)."""
    await reset_streams(nats_url)
    db = await fresh_db("orders")
    async with stack(db, nats_url, tmp_path) as running:
        yield running


@pytest.fixture
async def full(services: Stack) -> Stack:
    """Membership, payments and orders, all running."""
    await services.start_membership()
    await services.start_payments()
    await services.start_orders()
    return services
