"""A running payments service per test, on its own fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.infra import FreshDb
from tests.integration.payments.harness import Running, running_payments


@pytest.fixture
async def payments(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str
) -> AsyncIterator[Running]:
    db = await fresh_db("payments")
    async with running_payments(db, nats_url) as run:
        yield run
