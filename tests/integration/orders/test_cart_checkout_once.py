"""A cart is checked out once: concurrent cart checkouts, over two orders replicas, place one
order; a declined one gives the cart back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack

CART_CHECKOUT = {"from_cart": True, "payment": {"token": "tok_visa"}}


async def _sku(stack: Stack, stock: int = 10) -> f.SkuRow:
    conn = await stack.sql()
    try:
        (sku,) = await f.product(conn, await f.merchant(conn), skus=[(1_500, stock)])
        return sku
    finally:
        await conn.close()


async def _cart(orders: httpx.AsyncClient, auth: dict[str, str]) -> list[tuple[str, int]]:
    cart = await orders.get("/v1/cart/items", headers=auth)
    assert cart.status_code == 200, cart.text
    return [(i["sku_id"], i["quantity"]) for i in cart.json()["items"]]


@pytest.fixture
async def replicas(full: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two orders replicas over one database (the stack closes only the last client)."""
    first = full.orders
    assert first is not None
    await full.start_orders()
    assert full.orders is not None
    try:
        yield first, full.orders
    finally:
        await first.aclose()


async def test_concurrent_cart_checkouts_on_two_replicas_place_one_order(
    full: Stack, replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    first, second = replicas
    sku = await _sku(full)
    member = await full.member()
    auth = {"Authorization": member["Authorization"]}
    put = await first.put("/v1/cart/items", json={"sku_id": str(sku.id), "quantity": 3},
                          headers=auth)
    assert put.status_code == 200, put.text

    answers = await asyncio.gather(*(
        replica.post("/v1/orders", json=CART_CHECKOUT,
                     headers=auth | {"Idempotency-Key": f"cart-race-{n}"})
        for n, replica in enumerate([first, second] * 2 + [first])))

    placed = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(placed) == 1, [(a.status_code, a.text) for a in answers]
    for answer in refused:  # the cart was taken (409) or already gone when read (422)
        problem = answer.json()
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert (answer.status_code, problem["type"].rsplit("/", 1)[-1]) in {
            (409, "cart-in-checkout"), (422, "validation-error")}, answer.text
        if answer.status_code == 422:
            assert problem["field"] == "from_cart"
    conn = await full.sql()
    try:
        assert await f.stock_of(conn, sku.id) == {
            "stock": 7, "held": 0, "sold": 3, "initial_stock": 10, "restocked": 0}
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE member_id = $1",
                                   uuid.UUID(member["id"])) == 1
    finally:
        await conn.close()
    payments = await full.sql("payments")
    try:
        assert await payments.fetchval("SELECT count(*) FROM payments WHERE member_id = $1",
                                       uuid.UUID(member["id"])) == 1
    finally:
        await payments.close()
    assert await _cart(first, auth) == []
    # The winner's retry still gets the winner's answer, byte for byte.
    winner = answers.index(placed[0])
    replay = await second.post("/v1/orders", json=CART_CHECKOUT,
                               headers=auth | {"Idempotency-Key": f"cart-race-{winner}"})
    assert (replay.status_code, replay.content) == (201, placed[0].content)


async def test_a_declined_cart_checkout_leaves_the_cart_for_another_card(full: Stack) -> None:
    orders = full.orders
    assert orders is not None
    sku = await _sku(full)
    auth = {"Authorization": (await full.member())["Authorization"]}
    await orders.put("/v1/cart/items", json={"sku_id": str(sku.id), "quantity": 2}, headers=auth)

    declined = await orders.post(
        "/v1/orders", json=CART_CHECKOUT | {"payment": {"token": "tok_chargeDeclined"}},
        headers=auth | {"Idempotency-Key": "declined"})
    cart_after_decline = await _cart(orders, auth)
    paid = await orders.post("/v1/orders", json=CART_CHECKOUT,
                             headers=auth | {"Idempotency-Key": "paid"})

    assert declined.status_code == 402, declined.text
    assert declined.json()["order"]["status"] == "CANCELLED"
    assert cart_after_decline == [(str(sku.id), 2)]
    assert paid.status_code == 201, paid.text
    assert [(i["sku_id"], i["quantity"]) for i in paid.json()["items"]] == [(str(sku.id), 2)]
    assert await _cart(orders, auth) == []
    conn = await full.sql()
    try:
        assert await f.stock_of(conn, sku.id) == {
            "stock": 8, "held": 0, "sold": 2, "initial_stock": 10, "restocked": 0}
    finally:
        await conn.close()
