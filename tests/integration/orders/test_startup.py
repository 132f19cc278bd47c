"""A service that cannot listen fails with an error that says what to change."""

from __future__ import annotations

import asyncio
import socket

import pytest

from services.common import runtime
from services.orders import bootstrap
from services.orders.settings import OrdersSettings
from tests.infra import free_port
from tests.integration.orders.harness import SECRET, Stack


async def test_a_taken_http_port_is_an_error_naming_the_setting_not_an_exit(
    services: Stack,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        settings = OrdersSettings(
            database_url=services.db.dsn("orders"), nats_url=services.nats_url,
            http_port=port, internal_auth_secret=SECRET, environment="test",
            payments_target=f"127.0.0.1:{free_port()}",
            membership_target=f"127.0.0.1:{free_port()}")
        service = await bootstrap.start(settings)
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}.*ORDERS_HTTP_PORT"):
            await asyncio.wait_for(
                runtime.serve(service.infra, service.app, tasks=service.tasks,
                              stop=asyncio.Event()), timeout=30)


class _Stubborn:
    """A background loop that swallows its cancellation (a bug somewhere, say) until the
    test lets it go, so that it does not outlive the test."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def run(self) -> None:
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                continue


async def test_a_loop_that_will_not_stop_does_not_hold_the_service_up(
    services: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = OrdersSettings(
        database_url=services.db.dsn("orders"), nats_url=services.nats_url,
        http_port=free_port(), internal_auth_secret=SECRET, environment="test",
        payments_target=f"127.0.0.1:{free_port()}",
        membership_target=f"127.0.0.1:{free_port()}")
    service = await bootstrap.start(settings)
    stubborn = _Stubborn()
    stop = asyncio.Event()
    stop.set()  # stop at once: what matters is the way out
    try:
        await asyncio.wait_for(
            runtime.serve(service.infra, service.app, tasks=[*service.tasks, stubborn.run()],
                          stop=stop, stop_within_s=0.5), timeout=30)

        [late] = [r for r in caplog.records if "did not stop in time" in r.getMessage()]
        assert late.tasks == ["_Stubborn.run"]  # type: ignore[attr-defined]
        assert service.infra.pool.is_closing()
    finally:
        stubborn.released.set()
        await asyncio.sleep(0)
