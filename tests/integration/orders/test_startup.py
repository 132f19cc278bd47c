"""A service that cannot listen fails with an error that says what to change."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import httpx
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
                runtime.serve(service, stop=asyncio.Event()), timeout=30)


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
    service.tasks.append(stubborn.run())
    stop.set()  # stop at once: what matters is the way out
    try:
        await asyncio.wait_for(runtime.serve(service, stop=stop, stop_within_s=0.5), timeout=30)

        [late] = [r for r in caplog.records if "did not stop in time" in r.getMessage()]
        assert late.tasks == ["_Stubborn.run"]  # type: ignore[attr-defined]
        assert service.infra.pool.is_closing()
    finally:
        stubborn.released.set()
        await asyncio.sleep(0)


async def test_a_stopping_service_drains_readyz_503_while_it_still_answers(
    services: Stack,
) -> None:
    """Behind a load balancer, a replica told to stop first fails its health check (so no
    new request is sent to it) and keeps answering meanwhile; its instance id says which."""
    port = free_port()
    settings = OrdersSettings(
        database_url=services.db.dsn("orders"), nats_url=services.nats_url,
        http_port=port, internal_auth_secret=SECRET, environment="test",
        payments_target=f"127.0.0.1:{free_port()}",
        membership_target=f"127.0.0.1:{free_port()}", instance_id="orders-7", drain_s=30)
    service = await bootstrap.start(settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(
        runtime.serve(service, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await _until_status(client, "/readyz", 200)
            metrics = (await client.get("/metrics")).text
            assert 'marketplace_instance_info{instance_id="orders-7",service="orders"} 1.0' \
                in metrics
            stop.set()
            ready = await _until_status(client, "/readyz", 503)
            assert ready.json()["draining"] == {"ok": False, "instance": "orders-7"}
            assert (await client.get("/v1/categories")).status_code == 200
            assert not serving.done()
    finally:
        stop.set()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _until_status(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    last = "no answer"
    for _ in range(200):
        try:
            answer = await client.get(path)
        except httpx.ConnectError as exc:  # not listening yet
            last = repr(exc)
        else:
            if answer.status_code == status:
                return answer
            last = str(answer.status_code)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never answered {status} (last: {last})")
