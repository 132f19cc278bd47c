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
