"""The per-member checkout rate counts for the cluster: orders placed on two replicas add up."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack


async def test_a_members_checkouts_on_two_replicas_count_together(services: Stack) -> None:
    await services.start_membership()
    await services.start_payments()
    rate = {"member_checkout_burst": 3, "member_checkout_per_s": 0.01}
    await services.start_orders(**rate)
    first = services.orders
    await services.start_orders(**rate)  # a second replica, over the same database
    second = services.orders
    assert first is not None and second is not None
    conn = await services.sql()
    try:
        [sku] = await f.product(conn, await f.merchant(conn), skus=[(9_900, 20)])
    finally:
        await conn.close()
    member = await services.member()

    async def buy(orders: httpx.AsyncClient) -> httpx.Response:
        return await orders.post(
            "/v1/orders", json=f.order_body((sku.id, 1)),
            headers={"Authorization": member["Authorization"], "Idempotency-Key": uuid.uuid4().hex})

    try:
        placed = [(await buy(replica)).status_code for replica in (first, second, first)]
        refused = [await buy(replica) for replica in (second, first)]
    finally:
        await first.aclose()
    conn = await services.sql()
    try:
        orders = await conn.fetchval("SELECT count(*) FROM orders WHERE member_id = $1",
                                     uuid.UUID(member["id"]))
        stock = await f.stock_of(conn, sku.id)
    finally:
        await conn.close()

    assert placed == [201, 201, 201]
    assert [r.status_code for r in refused] == [429, 429]
    assert all(r.json()["type"].endswith("/rate-limited") for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert orders == 3  # a refused checkout placed nothing and held no stock
    assert (stock["stock"], stock["sold"]) == (17, 3)
