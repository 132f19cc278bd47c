"""The four services as processes, NATS with one user per service, for hostile-input tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.faults.harness import Catalog, ServiceStack, make_catalog, service_stack


@pytest.fixture(scope="package")
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[ServiceStack]:
    request.getfixturevalue("_embedded_servers_guard")
    async with service_stack("security") as s:
        yield s


@pytest.fixture(scope="package")
async def catalog(stack: ServiceStack) -> Catalog:
    return await make_catalog(stack)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client
