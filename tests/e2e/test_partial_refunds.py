"""Admin partial refunds in payments reach every service: the order, points, GMV, the audit."""

from __future__ import annotations

from typing import Any

import httpx

from tests import factories
from tests.e2e.conftest import Stack
from tests.e2e.test_checkout import assert_audit_clean, gmv, stock_of
from tests.factories import SignedIn
from tests.helpers import eventually


class Buyer:
    """A new member and what they see of themselves and their orders."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, who: SignedIn) -> None:
        self.stack, self.http, self.who = stack, http, who

    async def me(self) -> dict[str, Any]:
        answer = await self.http.get(f"{self.stack.url('membership')}/v1/members/me",
                                     headers=self.who.auth)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def ledger(self, order_id: str) -> list[tuple[str, int]]:
        answer = await self.http.get(f"{self.stack.url('membership')}/v1/members/me/points",
                                     params={"limit": 100}, headers=self.who.auth)
        assert answer.status_code == 200, answer.text
        return [(e["reason"], e["delta"]) for e in answer.json()["items"]
                if e["order_id"] == order_id]

    async def order(self, order_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"{self.stack.url('orders')}/v1/orders/{order_id}",
                                     headers=self.who.auth)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def place(self, sku_id: str, quantity: int, **extra: Any) -> dict[str, Any]:
        placed = await self.http.post(
            f"{self.stack.url('orders')}/v1/orders",
            json=factories.order_body(sku_id, quantity, **extra),
            headers=self.who.auth | factories.idem())
        assert placed.status_code == 201, placed.text
        body: dict[str, Any] = placed.json()
        return body


async def admin_refund(
    http: httpx.AsyncClient, stack: Stack, payment_id: str, key: str, amount: int | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"reason": "support ticket"}
    if amount is not None:
        body["amount"] = {"amount": amount, "currency": "CNY"}
    return await http.post(
        f"{stack.url('payments')}/v1/admin/payments/{payment_id}/refunds", json=body,
        headers={"X-Admin-Key": stack.admin_key, "Idempotency-Key": key})


async def test_partial_then_full_admin_refunds_land_on_order_points_gmv_and_audit(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    buyer = Buyer(stack, http, await factories.member(http, stack.url("membership")))
    # Stays BRONZE (under ¥2,000 of spend): 1 point per ¥1, no discount.
    sku = await factories.sku_in_stock(http, stack.url("orders"), min_stock=4, max_price=40_000)
    first = await buyer.place(sku["id"], 2)
    earned_first = first["total"]["amount"] // 100
    await eventually(buyer.me, until=lambda me: me["points_balance"] == earned_first,
                     what="points for the first order")
    stock_before = await stock_of(http, stack, sku["product_id"], sku["id"])

    order = await buyer.place(sku["id"], 2, points_to_redeem=earned_first)
    total, redeemed = order["total"]["amount"], order["points_redeemed"]
    earned = total // 100
    assert redeemed == earned_first and earned >= 3, order  # so a third reverses a point
    await eventually(buyer.me, until=lambda me: me["points_balance"] == earned,
                     what="points redeemed and earned")
    # Checkout's redemption (CommitPoints) and the points earned on its confirmation event
    # arrive by separate paths, in either order; every later entry is strictly ordered.
    checkout = await buyer.ledger(order["id"])
    assert sorted(checkout) == sorted([("earn", earned), ("redeem", -redeemed)]), checkout
    gmv_before = await gmv(http, stack)

    part = total // 3
    partial = await admin_refund(http, stack, order["payment_id"], "ticket-1", part)
    replay = await admin_refund(http, stack, order["payment_id"], "ticket-1", part)
    assert partial.status_code == replay.status_code == 201, partial.text
    assert replay.content == partial.content
    assert partial.json()["refunded"] == {"amount": part, "currency": "CNY"}

    landed = await eventually(lambda: buyer.order(order["id"]),
                              until=lambda o: o["refunded"]["amount"] == part,
                              what="the partial refund on the order")
    assert landed["status"] == "CONFIRMED"
    assert await stock_of(http, stack, sku["product_id"], sku["id"]) == stock_before - 2
    reversed_part = earned * part // total
    me = await eventually(buyer.me, until=lambda m: m["points_balance"] == earned - reversed_part,
                          what="points reversed in proportion")
    assert me["lifetime_spend"]["amount"] == first["total"]["amount"] + total - part
    assert await buyer.ledger(order["id"]) == [("reverse", -reversed_part), *checkout]
    await eventually(
        lambda: gmv(http, stack),
        until=lambda g: g["refunds"]["amount"] == gmv_before["refunds"]["amount"] + part,
        what="the partial refund in analytics")
    await assert_audit_clean(stack)

    rest = await admin_refund(http, stack, order["payment_id"], "ticket-2")
    assert rest.status_code == 201, rest.text
    assert rest.json()["status"] == "REFUNDED"

    done = await eventually(lambda: buyer.order(order["id"]),
                            until=lambda o: o["status"] == "REFUNDED",
                            what="the order refunded in full")
    assert done["refunded"] == {"amount": total, "currency": "CNY"}
    assert await stock_of(http, stack, sku["product_id"], sku["id"]) == stock_before
    me = await eventually(buyer.me, until=lambda m: m["points_balance"] == earned_first,
                          what="redeemed points back, earned ones reversed")
    assert me["lifetime_spend"]["amount"] == first["total"]["amount"]
    assert await buyer.ledger(order["id"]) == [
        ("reverse", -(earned - reversed_part)), ("restore", redeemed),
        ("reverse", -reversed_part), *checkout]
    after = await eventually(
        lambda: gmv(http, stack),
        until=lambda g: g["refunds"]["amount"] == gmv_before["refunds"]["amount"] + total,
        what="the whole refund in analytics")
    assert after["net_gmv"]["amount"] == after["gmv"]["amount"] - after["refunds"]["amount"]

    # The first request once more: payments answers as it did then, and nothing moves.
    late = await admin_refund(http, stack, order["payment_id"], "ticket-1", part)
    assert (late.status_code, late.content) == (201, partial.content)
    await assert_audit_clean(stack)
    payment = await http.get(f"{stack.url('payments')}/v1/payments/{order['payment_id']}",
                             headers=buyer.who.auth)
    assert payment.json()["refunded"] == {"amount": total, "currency": "CNY"}
    assert (await buyer.order(order["id"]))["refunded"] == {"amount": total, "currency": "CNY"}
