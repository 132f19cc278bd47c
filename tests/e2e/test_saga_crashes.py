"""kill -9 between saga steps: orders (fault injection at each step), then payments.

Checkout pays with one Authorize that also captures (a sale), so the steps of a checkout
request are: stock reserved, payment taken, order confirmed.

After each restart the recovery loop finishes what the crash interrupted; in the end no
order is PENDING, and payments, stock and points agree with the orders (the audit).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx

from tests import factories
from tests.e2e.conftest import SINGLE_ONLY, Stack
from tests.e2e.test_checkout import assert_audit_clean
from tests.helpers import eventually

# Kills and restarts one process per service by name: the single shape.
pytestmark = SINGLE_ONLY

STEPS = ("after_reserve", "after_authorize", "after_confirm")
# Checkouts in flight together when a process is killed: placed, paid or settled as a batch.
BATCH = 4
# Wide enough that the concurrent checkouts of a test share their batches.
BATCHING = {"ORDERS_CHECKOUT_BATCH_WINDOW_MS": "50", "ORDERS_RECOVERY_GRACE_S": "1"}


@contextlib.asynccontextmanager
async def service_env(stack: Stack, name: str, **env: str) -> AsyncIterator[None]:
    """The service restarted with extra variables; restarted as it was afterwards."""
    saved = dict(stack.env[name])
    try:
        await restart(stack, name, **env)
        yield
    finally:
        stack.env[name] = saved
        await restart(stack, name)


def orders_env(stack: Stack, **env: str) -> contextlib.AbstractAsyncContextManager[None]:
    return service_env(stack, "orders", **env)


async def restart(stack: Stack, name: str, **env: str) -> None:
    if stack.children[name].proc.poll() is None:
        stack.kill(name)
    stack.env[name] = stack.env[name] | env
    await stack.start(name)


async def latest_order(stack: Stack, member_id: str) -> str:
    conn = await asyncpg.connect(stack.db.auditor_dsn)
    try:
        found = await conn.fetchval("SELECT id FROM orders.orders WHERE member_id = $1 "
                                    "ORDER BY created_at DESC LIMIT 1", uuid.UUID(member_id))
    finally:
        await conn.close()
    return str(found)


async def payment_status(stack: Stack, order_id: str) -> str | None:
    conn = await asyncpg.connect(stack.db.auditor_dsn)
    try:
        return await conn.fetchval("SELECT status FROM payments.payments WHERE order_id = $1",
                                   uuid.UUID(order_id))
    finally:
        await conn.close()


async def settled(http: httpx.AsyncClient, stack: Stack, buyer: factories.SignedIn,
                  order_ids: list[str]) -> dict[str, str]:
    async def statuses() -> dict[str, str]:
        found = {}
        for order_id in order_ids:
            answer = await http.get(f"{stack.url('orders')}/v1/orders/{order_id}",
                                    headers=buyer.auth)
            found[order_id] = answer.json()["status"]
        return found

    return await eventually(statuses, until=lambda s: "PENDING" not in s.values(),
                            timeout_s=60, what="every order settled")


async def test_orders_killed_at_every_saga_step_settles_every_order(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"), min_stock=len(STEPS) + 1)
    first = await http.post(f"{stack.url('orders')}/v1/orders",
                            json=factories.order_body(sku["id"]), headers=buyer.auth
                            | factories.idem())
    assert first.status_code == 201, first.text

    async def points() -> int:
        me = await http.get(f"{stack.url('membership')}/v1/members/me", headers=buyer.auth)
        return int(me.json()["points_balance"])

    await eventually(points, until=lambda p: p >= len(STEPS), what="points to redeem")
    order_ids = []
    async with orders_env(stack, ORDERS_RECOVERY_GRACE_S="1"):
        for step in STEPS:
            await restart(stack, "orders", ORDERS_FAULT_CRASH_AT=step)
            body = factories.order_body(sku["id"], points_to_redeem=1)
            with contextlib.suppress(httpx.TransportError):
                answer = await http.post(f"{stack.url('orders')}/v1/orders", json=body,
                                         headers=buyer.auth | factories.idem())
                raise AssertionError(f"orders answered {answer.status_code} instead of dying")
            await asyncio.to_thread(stack.children["orders"].proc.wait)
            order_ids.append(await latest_order(stack, buyer.id))
        stack.env["orders"].pop("ORDERS_FAULT_CRASH_AT")
        await restart(stack, "orders")
        final = await settled(http, stack, buyer, order_ids)

    assert len(set(order_ids)) == len(STEPS)
    assert set(final.values()) <= {"CONFIRMED", "CANCELLED"}, final
    await assert_audit_clean(stack)


async def test_payments_killed_before_and_during_a_sale(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"), min_stock=2)
    order_ids = []
    async with orders_env(stack, ORDERS_RECOVERY_GRACE_S="1"):
        stack.kill("payments")
        down = await http.post(f"{stack.url('orders')}/v1/orders",
                               json=factories.order_body(sku["id"]),
                               headers=buyer.auth | factories.idem())
        assert down.status_code == 202, down.text
        order_ids.append(down.json()["id"])

        # A slow processor keeps the sale inside payments (authorized at the processor,
        # nothing committed yet) long enough to kill payments in the middle of it.
        async with service_env(stack, "payments", PAYMENTS_PROCESSOR_LATENCY_MS="700"):
            during = asyncio.create_task(http.post(
                f"{stack.url('orders')}/v1/orders", json=factories.order_body(sku["id"]),
                headers=buyer.auth | factories.idem()))
            await eventually(lambda: latest_order(stack, buyer.id),
                             until=lambda o: o not in order_ids, what="the second order")
            order_ids.append(await latest_order(stack, buyer.id))
            await asyncio.sleep(0.3)
            stack.kill("payments")
            answer = await during
            assert answer.status_code == 202, answer.text
            assert await payment_status(stack, order_ids[1]) is None
        final = await settled(http, stack, buyer, order_ids)

    assert set(final.values()) <= {"CONFIRMED", "CANCELLED"}, final
    await assert_audit_clean(stack)


async def final_states(stack: Stack, members: list[str]) -> list[asyncpg.Record]:
    """Each order of the members with its payments once none is PENDING any more."""
    async def rows() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.db.auditor_dsn)
        try:
            return list(await conn.fetch(
                "SELECT o.id, o.status, array_remove(array_agg(p.status), NULL) AS payments "
                "FROM orders.orders o LEFT JOIN payments.payments p ON p.order_id = o.id "
                "WHERE o.member_id = ANY($1::uuid[]) GROUP BY o.id, o.status",
                [uuid.UUID(m) for m in members]))
        finally:
            await conn.close()

    return await eventually(rows, until=lambda r: all(x["status"] != "PENDING" for x in r),
                            timeout_s=90, what="every order of the batch settled")


def assert_settled_once(orders: list[asyncpg.Record], expected: int) -> None:
    """Every order CONFIRMED or CANCELLED; one payment at most per order, and money kept
    (captured) exactly for the confirmed ones."""
    assert len(orders) == expected, orders
    for order in orders:
        assert order["status"] in ("CONFIRMED", "CANCELLED"), dict(order)
        assert len(order["payments"]) <= 1, dict(order)
        charged = any(p in ("CAPTURED", "PARTIALLY_REFUNDED") for p in order["payments"])
        assert charged == (order["status"] == "CONFIRMED"), dict(order)


async def checkouts(http: httpx.AsyncClient, stack: Stack, buyers: list[factories.SignedIn],
                    sku_id: str) -> list[httpx.Response | BaseException]:
    """One checkout per buyer, all at once (so that they share their batches)."""
    return await asyncio.gather(*(
        http.post(f"{stack.url('orders')}/v1/orders", json=factories.order_body(sku_id),
                  headers=buyer.auth | factories.idem()) for buyer in buyers),
        return_exceptions=True)


async def test_orders_killed_in_the_middle_of_a_batch_settles_every_order_once(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    # One buyer per checkout: two orders of one member never share a placing batch.
    buyers = [await factories.member(http, stack.url("membership")) for _ in range(BATCH)]
    sku = await factories.sku_in_stock(http, stack.url("orders"),
                                       min_stock=BATCH * len(STEPS))
    async with orders_env(stack, ORDERS_FAULT_BATCH_OF=str(BATCH), **BATCHING):
        for step in STEPS:
            # The kill waits until all BATCH checkouts are at the step: a whole batch placed
            # and not paid, paid and not settled, or settled and not answered.
            await restart(stack, "orders", ORDERS_FAULT_CRASH_AT=step)
            answers = await checkouts(http, stack, buyers, sku["id"])
            assert all(isinstance(a, httpx.TransportError) for a in answers), (step, answers)
            await asyncio.to_thread(stack.children["orders"].proc.wait)
        stack.env["orders"].pop("ORDERS_FAULT_CRASH_AT")
        await restart(stack, "orders")
        orders = await final_states(stack, [b.id for b in buyers])

    assert_settled_once(orders, BATCH * len(STEPS))
    await assert_audit_clean(stack)


async def test_payments_killed_in_the_middle_of_a_batch_settles_every_order_once(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    buyers = [await factories.member(http, stack.url("membership")) for _ in range(BATCH)]
    sku = await factories.sku_in_stock(http, stack.url("orders"), min_stock=BATCH)

    async def placed() -> int:
        return len(await orders_of(stack, [b.id for b in buyers]))

    async with orders_env(stack, **BATCHING):
        async with service_env(stack, "payments", PAYMENTS_PROCESSOR_LATENCY_MS="700"):
            # The batch's sale is at the (slow) processor, nothing recorded yet, when
            # payments dies.
            during = asyncio.create_task(checkouts(http, stack, buyers, sku["id"]))
            await eventually(placed, until=lambda n: n == BATCH, what="the batch placed")
            await asyncio.sleep(0.3)
            stack.kill("payments")
            answers = await during
            assert [getattr(a, "status_code", a) for a in answers] == [202] * BATCH, answers
        orders = await final_states(stack, [b.id for b in buyers])

    assert_settled_once(orders, BATCH)
    await assert_audit_clean(stack)


async def orders_of(stack: Stack, members: list[str]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.db.auditor_dsn)
    try:
        return list(await conn.fetch("SELECT id FROM orders.orders WHERE member_id = "
                                     "ANY($1::uuid[])", [uuid.UUID(m) for m in members]))
    finally:
        await conn.close()
