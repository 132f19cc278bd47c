"""A NATS server of a test's own, which the test may stop and start again (outages); the
shared `bus` is in `tests/integration/conftest.py`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.cli.natsserver import start_nats, stop_nats
from tests.infra import free_port


class RestartableNats:
    """One nats-server on a fixed port and store, so a restart keeps its streams."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.monitor_port = free_port(), free_port()
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = await asyncio.to_thread(
            start_nats, self.root / "nats.conf", self.root / "js",
            log_file=self.root / "nats.log", port=self.port, monitor_port=self.monitor_port,
        )
        assert server.port == self.port, "the restarted server must come back on its port"
        self.pid = server.pid

    async def stop(self) -> None:
        await asyncio.to_thread(stop_nats, self.pid, self.root / "nats.conf")
        self.pid = None


@pytest.fixture
async def nats_factory() -> AsyncIterator[Callable[[Path], Awaitable[RestartableNats]]]:
    servers: list[RestartableNats] = []

    async def make(root: Path) -> RestartableNats:
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        server = RestartableNats(root)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.pid is not None:
            await server.stop()
