"""The four services as processes, NATS with one user per service, for hostile-input tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests import factories
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


async def _member_auth(http: httpx.AsyncClient, membership: str) -> dict[str, str]:
    """A new member's Bearer header; sign-in waits out the per-client limit (429 + Retry-After)
    that other tests of this package's stack may have used up."""
    body = {
        "email": f"fuzz-{uuid.uuid4().hex[:12]}@example.com", "password": factories.PASSWORD,
        "name": "Fuzz Member", "birth_year": 1990, "region": "CN-SH",
    }  # fmt: skip
    created = await http.post(f"{membership}/v1/members", json=body)
    assert created.status_code == 201, created.text
    credentials = {"email": body["email"], "password": body["password"]}
    for _ in range(30):
        token = await http.post(f"{membership}/v1/auth/token", json=credentials)
        if token.status_code != 429:
            break
        await asyncio.sleep(min(float(token.headers.get("retry-after", "1")), 5.0))
    assert token.status_code == 200, token.text
    return {"authorization": f"Bearer {token.json()['access_token']}"}


@pytest.fixture(scope="module")
async def auth(stack: ServiceStack) -> dict[str, str]:
    """A member's Bearer token, the admin key and a merchant's X-API-Key, sent on every case.

    One set per test module: the orders fuzz rotates its merchant's key."""
    async with httpx.AsyncClient(timeout=30.0) as http:
        member = await _member_auth(http, stack.url("membership"))
        created = await http.post(
            f"{stack.url('orders')}/v1/merchants", json={"name": "Fuzz Merchant"},
            headers={"x-admin-key": stack.admin_key},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        api_key = created.json()["api_key"]
        # analytics learns merchant keys from orders.merchant.* events: wait until it knows this
        for _ in range(100):
            known = await http.get(f"{stack.url('analytics')}/v1/insights/me",
                                   headers={"x-api-key": api_key})  # fmt: skip
            if known.status_code != 401:
                break
            await asyncio.sleep(0.1)
    return member | {"x-admin-key": stack.admin_key, "x-api-key": api_key}
