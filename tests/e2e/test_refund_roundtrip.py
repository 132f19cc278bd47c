"""Cancelling a confirmed order: the money, the stock, the points and the GMV all come back."""

from __future__ import annotations

import httpx

from tests import factories
from tests.e2e.conftest import Stack
from tests.e2e.test_checkout import assert_audit_clean, gmv, stock_of
from tests.helpers import eventually


async def test_a_refund_returns_stock_payment_points_and_gmv(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    orders, membership = stack.url("orders"), stack.url("membership")
    buyer = await factories.member(http, membership)
    sku = await factories.sku_in_stock(http, orders, min_stock=2)
    stock_before = await stock_of(http, stack, sku["product_id"], sku["id"])
    before = await gmv(http, stack)

    async def points() -> int:
        me = await http.get(f"{membership}/v1/members/me", headers=buyer.auth)
        return int(me.json()["points_balance"])

    placed = await http.post(f"{orders}/v1/orders", json=factories.order_body(sku["id"], 2),
                             headers=buyer.auth | factories.idem())
    assert placed.status_code == 201, placed.text
    order = placed.json()
    total = order["total"]["amount"]
    await eventually(points, until=lambda p: p == total // 100, what="points earned")

    cancelled = await http.post(f"{orders}/v1/orders/{order['id']}/cancel", headers=buyer.auth)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "REFUNDED"
    assert await stock_of(http, stack, sku["product_id"], sku["id"]) == stock_before
    payment = await http.get(f"{stack.url('payments')}/v1/payments/{order['payment_id']}",
                             headers=buyer.auth)
    assert payment.json()["refunded"] == {"amount": total, "currency": "CNY"}
    await eventually(points, until=lambda p: p == 0, what="points reversed")
    await eventually(
        lambda: gmv(http, stack),
        until=lambda g: g["refunds"]["amount"] == before["refunds"]["amount"] + total,
        what="the refund in analytics")
    again = await http.post(f"{orders}/v1/orders/{order['id']}/cancel", headers=buyer.auth)
    assert again.json()["status"] == "REFUNDED"
    await assert_audit_clean(stack)
