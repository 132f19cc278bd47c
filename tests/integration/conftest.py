"""Fixtures shared by the integration tests of every service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.bus import Bus
from tests.helpers import reset_streams


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connection to the session's NATS, its streams emptied and declared afresh."""
    await reset_streams(nats_url)
    b = await Bus.connect(nats_url, name="test")
    await b.ensure_streams()
    yield b
    await b.close()
