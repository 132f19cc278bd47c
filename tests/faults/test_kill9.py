"""kill -9 of each service in the middle of a checkout burst, then a restart."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests import factories
from tests.faults.burst import (
    assert_audit_clean,
    assert_outboxes_drained,
    assert_settled,
    checkout_burst,
)
from tests.faults.harness import Catalog, ServiceStack


@pytest.mark.parametrize("victim", ["orders", "payments", "membership", "analytics"])
async def test_kill9_mid_burst_leaves_no_order_behind(
    stack: ServiceStack,
    http: httpx.AsyncClient,
    catalog: Catalog,
    buyers: list[factories.SignedIn],
    victim: str,
) -> None:
    halfway = asyncio.Event()
    burst = asyncio.create_task(checkout_burst(http, stack, buyers, catalog, halfway=halfway))
    await halfway.wait()
    stack.kill(victim)
    await stack.start(victim)
    result = await burst

    assert result.accepted, result.statuses
    await assert_settled(stack, result.accepted)
    await assert_outboxes_drained(stack)
    await assert_audit_clean(stack)
