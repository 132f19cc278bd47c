"""One service in-process on real ports: how the integration tests start a service.

(`processes.py` starts replicas as real processes instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx

from services.common import runtime
from services.common.settings import ServiceSettings
from tests.helpers import eventually

ContextT = TypeVar("ContextT")


@contextlib.asynccontextmanager
async def run_in_process(
    start: Callable[..., Awaitable[runtime.Service[ContextT]]],
    settings: ServiceSettings,
    **overrides: Any,
) -> AsyncIterator[runtime.Service[ContextT]]:
    """`start(settings, **overrides)` (a `bootstrap.start`), served until the block ends.

    Yields once /readyz answers 200; a service that fails to start fails here with its own
    error. Afterwards it is stopped the way SIGTERM stops it, and found stopped.
    """
    service = await start(settings, **overrides)
    # Bus.close() drains; a pull consumer cancelled mid-fetch can hold the drain for its
    # whole default timeout (30 s), so tests bound it (reported to the lead).
    service.infra.bus.nc.options["drain_timeout"] = 2
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.serve(service, stop=stop),
                                  name=f"{settings.service_name} in-process")
    try:
        await _until_ready(settings, serving)
        yield service
    finally:
        stop.set()
        await serving
    assert service.infra.pool.is_closing(), f"{settings.service_name}: pool left open"
    assert not service.infra.bus.connected, f"{settings.service_name}: NATS left connected"


async def _until_ready(settings: ServiceSettings, serving: asyncio.Task[None]) -> None:
    url = f"http://{settings.http_host}:{settings.http_port}/readyz"
    async with httpx.AsyncClient(timeout=5) as http:

        async def status() -> int | None:
            if serving.done():  # raises what stopped it (a taken port, say)
                serving.result()
                raise AssertionError(f"{settings.service_name} stopped before it was ready")
            try:
                return (await http.get(url)).status_code
            except httpx.TransportError:
                return None

        await eventually(status, until=lambda code: code == 200, timeout_s=30,
                         what=f"{settings.service_name} /readyz 200")
