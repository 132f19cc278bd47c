"""Restocks are bounded: a huge quantity or an on-hand count past the int column is a 422."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.orders.harness import Stack
from tests.integration.orders.test_merchants import key, new_merchant, outbox, product_body

INT_MAX = 2_147_483_647


async def _fill_to(stack: Stack, sku_id: str, on_hand: int) -> None:
    """Put units on hand the way restocks would (conservation and buckets kept)."""
    conn = await stack.sql()
    try:
        async with conn.transaction():
            extra = on_hand - await conn.fetchval("SELECT stock FROM skus WHERE id = $1",
                                                  uuid.UUID(sku_id))
            await conn.execute("UPDATE sku_stock_buckets SET stock = stock + $2 "
                               "WHERE sku_id = $1 AND bucket = 0", uuid.UUID(sku_id), extra)
            await conn.execute("UPDATE skus SET stock = stock + $2, restocked = restocked + $2 "
                               "WHERE id = $1", uuid.UUID(sku_id), extra)
    finally:
        await conn.close()


@pytest.mark.parametrize("quantity", [1_000_001, 10**30, INT_MAX + 1])
async def test_a_quantity_above_the_bound_is_refused_with_the_field(
    services: Stack, quantity: int
) -> None:
    await services.start_orders()
    orders = services.orders
    assert orders is not None
    mine = await new_merchant(orders)
    product = (await orders.post("/v1/merchant/products", json=product_body(),
                                 headers=key(mine))).json()
    sku = product["skus"][0]["id"]

    answer = await orders.post(f"/v1/merchant/skus/{sku}/restock", json={"quantity": quantity},
                               headers=key(mine))

    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == "quantity"
    assert await outbox(services, sku) == []


@pytest.mark.parametrize("hot", [False, True])
async def test_a_restock_past_the_int_column_is_refused_and_changes_nothing(
    services: Stack, hot: bool
) -> None:
    await services.start_orders()
    orders = services.orders
    assert orders is not None
    mine = await new_merchant(orders)
    product = (await orders.post("/v1/merchant/products", json=product_body(hot=hot),
                                 headers=key(mine))).json()
    sku = product["skus"][0]["id"]
    await _fill_to(services, sku, INT_MAX - 1_000)

    over = await orders.post(f"/v1/merchant/skus/{sku}/restock", json={"quantity": 1_001},
                             headers=key(mine))
    exact = await orders.post(f"/v1/merchant/skus/{sku}/restock", json={"quantity": 1_000},
                              headers=key(mine))
    more = await orders.post(f"/v1/merchant/skus/{sku}/restock", json={"quantity": 1},
                             headers=key(mine))

    assert over.status_code == 422, over.text
    assert over.json()["field"] == "quantity"
    assert "at most 1000 more units" in over.json()["detail"]
    assert exact.status_code == 200, exact.text
    assert exact.json()["stock_available"] == INT_MAX
    assert more.status_code == 422 and more.json()["field"] == "quantity"
    assert [s for s, _ in await outbox(services, sku)] == ["orders.stock.changed"]
    public = (await orders.get(f"/v1/products/{product['id']}")).json()
    assert next(s for s in public["skus"] if s["id"] == sku)["stock_available"] == INT_MAX
