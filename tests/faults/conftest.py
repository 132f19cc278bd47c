"""One stack for the fault scenarios: its own Postgres and NATS (both restartable) and
the four services as processes. Scenarios run in file order and each ends settled and
audited, so the next starts from a consistent system."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests import factories
from tests.faults.burst import members
from tests.faults.harness import Catalog, ServiceStack, make_catalog, service_stack


@pytest.fixture(scope="package")
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[ServiceStack]:
    request.getfixturevalue("_embedded_servers_guard")
    async with service_stack("faults") as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        yield client


@pytest.fixture(scope="package")
async def catalog(stack: ServiceStack) -> Catalog:
    return await make_catalog(stack)


@pytest.fixture(scope="package")
async def buyers(stack: ServiceStack) -> list[factories.SignedIn]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return await members(client, stack)
