"""One slow card must not take payments away from everyone (issue 14, item 2).

Orders whose card never answers within payments' processor timeout (`tok_slow`) wait in
orders' recovery queue and are retried; meanwhile other buyers' checkouts must still be
confirmed at once, and the slow orders still end at their payment deadline.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests import factories
from tests.faults.burst import (
    assert_audit_clean,
    assert_outboxes_drained,
    checkout_burst,
    members,
)
from tests.faults.harness import Catalog, ServiceStack, make_catalog, service_stack
from tests.helpers import eventually

SLOW_ORDERS = 15
CHECKOUTS = 30  # the figures: 30 checkouts over 30 s
# Long enough that the slow orders are still pending throughout the checkouts (about 40 s
# from their placing to the last checkout's answer), short enough that the test then sees
# them cancelled at their deadline without waiting long.
PAYMENT_DEADLINE_S = 60


async def _authorize_calls(http: httpx.AsyncClient, stack: ServiceStack) -> float:
    """Authorizations payments has handled or refused, whatever their outcome."""
    text = (await http.get(f"{stack.url('payments')}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith('marketplace_payments_processor_calls_total{operation="authorize"')
    )


async def _statuses(stack: ServiceStack, ids: list[str]) -> Counter[tuple[str, str | None]]:
    rows = await stack.sql(
        "SELECT status, cancel_reason FROM orders.orders WHERE id = ANY($1::uuid[])", ids)
    return Counter((r["status"], r["cancel_reason"]) for r in rows)


# A stack of its own: the scenario is "15 slow cards are the only trouble". After the
# outage scenarios of this package (Postgres and NATS restarted, the breaker tripped) the
# same test saw 10 of 30 good checkouts answered 202 on the shared stack, while on a fresh
# one it passes every time; that difference is not explained yet (see the closing note of
# the session that added this), so it is not allowed to hide the regression this guards.
@pytest.fixture(scope="module")
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[ServiceStack]:
    request.getfixturevalue("_embedded_servers_guard")
    async with service_stack("slowcard") as s:
        yield s


@pytest.fixture(scope="module")
async def catalog(stack: ServiceStack) -> Catalog:
    return await make_catalog(stack)


@pytest.fixture(scope="module")
async def buyers(stack: ServiceStack) -> list[factories.SignedIn]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return await members(client, stack)


async def test_slow_cards_in_recovery_do_not_hold_up_other_checkouts(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn],
) -> None:  # fmt: skip
    await stack.restart(
        "orders", ORDERS_PAYMENT_DEADLINE_S=str(PAYMENT_DEADLINE_S), ORDERS_RECOVERY_GRACE_S="1")
    try:
        calls_before = await _authorize_calls(http, stack)
        slow = await checkout_burst(
            http, stack, buyers[:SLOW_ORDERS], catalog, total=SLOW_ORDERS, token="tok_slow")
        assert slow.statuses == {"202": SLOW_ORDERS}, slow.statuses
        slow_ids = list(slow.accepted)
        # In the recovery queue: recovery has started asking payments for them again.
        await eventually(
            lambda: _authorize_calls(http, stack),
            until=lambda n: n > calls_before + SLOW_ORDERS, timeout_s=60,
            what="recovery retrying the slow orders")

        async def one_checkout(i: int) -> str:
            await asyncio.sleep(i)  # one a second, each on its own clock
            buyer = buyers[i % len(buyers)]
            answer = await checkout_burst(http, stack, [buyer], catalog, total=1)
            return next(iter(answer.statuses))

        answered = Counter(await asyncio.gather(*(one_checkout(i) for i in range(CHECKOUTS))))
        assert answered["201"] >= CHECKOUTS - 1, answered
        # The scenario held: the slow orders were pending the whole time.
        assert await _statuses(stack, slow_ids) == {("PENDING", None): SLOW_ORDERS}

        # And they still end at their payment deadline, as before.
        await eventually(
            lambda: _statuses(stack, slow_ids),
            until=lambda c: c == {("CANCELLED", "payment_timeout"): SLOW_ORDERS},
            timeout_s=PAYMENT_DEADLINE_S + 60, what="slow orders cancelled at their deadline")
    finally:
        await stack.restart("orders")
    await assert_outboxes_drained(stack)
    await assert_audit_clean(stack)
