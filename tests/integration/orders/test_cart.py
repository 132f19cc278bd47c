"""The member's cart, and checkout from it: the cart empties once the order is confirmed."""

from __future__ import annotations

import uuid

from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack


async def test_a_cart_checkout_confirms_and_empties_the_cart(full: Stack) -> None:
    assert full.orders is not None
    orders = full.orders
    conn = await full.sql()
    try:
        a, b = await f.product(conn, await f.merchant(conn), skus=[(1_200, 5), (800, 5)])
    finally:
        await conn.close()
    member = await full.member()
    auth = {"Authorization": member["Authorization"]}

    await orders.put("/v1/cart/items", json={"sku_id": str(a.id), "quantity": 2}, headers=auth)
    await orders.put("/v1/cart/items", json={"sku_id": str(b.id), "quantity": 1}, headers=auth)
    cart = await orders.get("/v1/cart/items", headers=auth)
    other = await full.member()
    others_cart = await orders.get("/v1/cart/items",
                                   headers={"Authorization": other["Authorization"]})
    placed = await orders.post("/v1/orders", json={"from_cart": True,
                                                   "payment": {"token": "tok_visa"}},
                               headers=auth | {"Idempotency-Key": "cart-1"})

    assert cart.json() == {"items": [
        {"sku_id": str(a.id), "quantity": 2, "unit_price": {"amount": 1_200, "currency": "CNY"}},
        {"sku_id": str(b.id), "quantity": 1, "unit_price": {"amount": 800, "currency": "CNY"}},
    ]}
    assert others_cart.json() == {"items": []}
    assert placed.status_code == 201, placed.text
    assert placed.json()["subtotal"]["amount"] == 2 * 1_200 + 800
    assert (await orders.get("/v1/cart/items", headers=auth)).json() == {"items": []}
    # The cart is empty now, yet a retry with the key is answered as the first time.
    replay = await orders.post("/v1/orders", json={"from_cart": True,
                                                   "payment": {"token": "tok_visa"}},
                               headers=auth | {"Idempotency-Key": "cart-1"})
    assert (replay.status_code, replay.content) == (201, placed.content)


async def test_cart_lines_change_and_go_and_bad_checkouts_name_their_field(full: Stack) -> None:
    assert full.orders is not None
    orders = full.orders
    conn = await full.sql()
    try:
        (a,) = await f.product(conn, await f.merchant(conn))
    finally:
        await conn.close()
    auth = {"Authorization": (await full.member())["Authorization"]}
    idem = {"Idempotency-Key": uuid.uuid4().hex}

    empty = await orders.post("/v1/orders", json={"from_cart": True,
                                                  "payment": {"token": "tok_visa"}},
                              headers=auth | idem)
    await orders.put("/v1/cart/items", json={"sku_id": str(a.id), "quantity": 3}, headers=auth)
    changed = await orders.put("/v1/cart/items", json={"sku_id": str(a.id), "quantity": 1},
                               headers=auth)
    both = await orders.post("/v1/orders", json=f.order_body((a.id, 1)) | {"from_cart": True},
                             headers=auth | idem)
    unknown = await orders.put("/v1/cart/items", json={"sku_id": str(uuid.uuid4()),
                                                       "quantity": 1}, headers=auth)
    zeroed = await orders.put("/v1/cart/items", json={"sku_id": str(a.id), "quantity": 0},
                              headers=auth)
    await orders.put("/v1/cart/items", json={"sku_id": str(a.id), "quantity": 2}, headers=auth)
    deleted = await orders.delete("/v1/cart/items", params={"sku_id": str(a.id)}, headers=auth)

    assert (empty.status_code, empty.json()["field"]) == (422, "from_cart")
    assert [i["quantity"] for i in changed.json()["items"]] == [1]
    assert (both.status_code, both.json()["field"]) == (422, "items")
    assert (unknown.status_code, unknown.json()["field"]) == (422, "sku_id")
    assert zeroed.json() == {"items": []} and deleted.json() == {"items": []}
    assert (await orders.get("/v1/cart/items")).status_code == 401


async def test_a_cart_holds_at_most_fifty_skus(full: Stack) -> None:
    assert full.orders is not None
    conn = await full.sql()
    try:
        skus = await f.product(conn, await f.merchant(conn), skus=[(100, 1)] * 51)
    finally:
        await conn.close()
    auth = {"Authorization": (await full.member())["Authorization"]}
    for sku in skus[:50]:
        ok = await full.orders.put("/v1/cart/items", json={"sku_id": str(sku.id), "quantity": 1},
                                   headers=auth)
        assert ok.status_code == 200, ok.text

    refused = await full.orders.put("/v1/cart/items",
                                    json={"sku_id": str(skus[50].id), "quantity": 1}, headers=auth)

    assert (refused.status_code, refused.json()["field"]) == (422, "sku_id")
    assert len((await full.orders.get("/v1/cart/items", headers=auth)).json()["items"]) == 50
