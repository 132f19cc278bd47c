"""A member climbs the tiers by buying, pays and earns at each new tier, and a refund takes
them back down; all four services as real processes, ending with a clean audit."""

from __future__ import annotations

from typing import Any

import httpx

from services.membership.domain.tiers import Tier, discount_bps, min_spend, points_multiplier
from tests import factories
from tests.e2e.conftest import SINGLE_ONLY, Stack
from tests.e2e.test_checkout import assert_audit_clean
from tests.helpers import eventually

pytestmark = SINGLE_ONLY

SILVER, GOLD = min_spend(Tier.SILVER), min_spend(Tier.GOLD)


async def sku_priced(
    http: httpx.AsyncClient, stack: Stack, *, low: int, high: int, min_stock: int
) -> dict[str, Any]:
    """A SKU priced within [low, high] fen with at least `min_stock` units."""
    cursor = None
    while True:
        params: dict[str, Any] = {"in_stock": "true", "limit": 100, "min_price": low,
                                  "max_price": high} | ({"cursor": cursor} if cursor else {})
        page = (await http.get(f"{stack.url('orders')}/v1/products", params=params)).json()
        for product in page["items"]:
            for sku in product["skus"]:
                if low <= sku["price"]["amount"] <= high and sku["stock_available"] >= min_stock:
                    return dict(sku)
        cursor = page.get("next_cursor")
        assert cursor, "no SKU in the seeded catalog fits"


class Shopper:
    def __init__(self, http: httpx.AsyncClient, stack: Stack, who: factories.SignedIn) -> None:
        self.http, self.stack, self.who = http, stack, who

    async def buy(self, sku_id: str, quantity: int) -> dict[str, Any]:
        answer = await self.http.post(
            f"{self.stack.url('orders')}/v1/orders",
            json=factories.order_body(sku_id, quantity=quantity),
            headers=self.who.auth | factories.idem(),
        )
        assert answer.status_code == 201, answer.text
        order: dict[str, Any] = answer.json()
        assert order["status"] == "CONFIRMED"
        return order

    async def me(self) -> dict[str, Any]:
        answer = await self.http.get(f"{self.stack.url('membership')}/v1/members/me",
                                     headers=self.who.auth)
        body: dict[str, Any] = answer.json()
        return body

    async def settled(self, tier: Tier, spend: int) -> dict[str, Any]:
        """Wait until membership has applied every order event (the tier and the spend) and
        orders has heard of the tier: checkout prices with the tier orders knows."""
        me = await eventually(
            self.me, until=lambda m: (m["tier"], m["lifetime_spend"]["amount"]) == (tier, spend),
            what=f"{tier} at lifetime spend {spend}", timeout_s=30,
        )
        await eventually(self.known_to_orders, until=lambda t: t == tier,
                         what=f"{tier} in orders' projection", timeout_s=30)
        return me

    async def known_to_orders(self) -> str | None:
        rows = await self.stack.db.sql(
            "SELECT tier FROM orders.member_tiers WHERE member_id = $1", self.who.id)
        return rows[0]["tier"] if rows else None

    async def points(self) -> dict[tuple[str, str], int]:
        """The points ledger as {(order id, reason): delta}."""
        answer = await self.http.get(f"{self.stack.url('membership')}/v1/members/me/points",
                                     params={"limit": 100}, headers=self.who.auth)
        return {(e["order_id"], e["reason"]): e["delta"] for e in answer.json()["items"]}


def earned(total: int, tier: Tier) -> int:
    rate = points_multiplier(tier)
    return total // 100 * rate.numerator // rate.denominator


def priced(order: dict[str, Any], unit: int, quantity: int, tier: Tier) -> bool:
    subtotal = unit * quantity
    discount = subtotal * discount_bps(tier) // 10_000
    return (order["subtotal"]["amount"], order["discount"]["amount"],
            order["total"]["amount"]) == (subtotal, discount, subtotal - discount)


def quantity_to_reach(target: int, spend: int, unit: int, tier: Tier) -> int:
    """The fewest units at `tier`'s discount that lift the lifetime spend to `target`."""
    quantity = 1
    while spend + unit * quantity * (10_000 - discount_bps(tier)) // 10_000 < target:
        quantity += 1
    return quantity


async def test_climb_to_silver_then_gold_earn_at_the_new_rate_and_a_refund_drops_a_tier(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    shopper = Shopper(http, stack, await factories.member(http, stack.url("membership")))
    sku = await sku_priced(http, stack, low=20_000, high=60_000, min_stock=80)
    unit = sku["price"]["amount"]

    # BRONZE, twice: the second order crosses ¥2,000 of lifetime spend.
    q1 = max(1, 100_000 // unit)
    first = await shopper.buy(sku["id"], q1)
    assert priced(first, unit, q1, Tier.BRONZE)
    await shopper.settled(Tier.BRONZE, unit * q1)
    q2 = quantity_to_reach(SILVER, unit * q1, unit, Tier.BRONZE)
    second = await shopper.buy(sku["id"], q2)
    assert priced(second, unit, q2, Tier.BRONZE)  # the crossing order has no discount yet
    spend = unit * (q1 + q2)
    await shopper.settled(Tier.SILVER, spend)

    # SILVER: 2% off; this order crosses ¥10,000.
    q3 = quantity_to_reach(GOLD, spend, unit, Tier.SILVER)
    third = await shopper.buy(sku["id"], q3)
    assert priced(third, unit, q3, Tier.SILVER), third
    recorded = await stack.db.sql("SELECT tier, discount_bps FROM orders.orders WHERE id = $1",
                                  third["id"])
    assert [tuple(r) for r in recorded] == [("SILVER", discount_bps(Tier.SILVER))]
    spend += third["total"]["amount"]
    await shopper.settled(Tier.GOLD, spend)

    # GOLD: 5% off and 1.5 points per yuan on the first order after crossing.
    fourth = await shopper.buy(sku["id"], 1)
    assert priced(fourth, unit, 1, Tier.GOLD), fourth
    spend += fourth["total"]["amount"]
    await shopper.settled(Tier.GOLD, spend)
    ledger = await shopper.points()
    expected = {
        (first["id"], "earn"): earned(first["total"]["amount"], Tier.BRONZE),
        (second["id"], "earn"): earned(second["total"]["amount"], Tier.BRONZE),
        (third["id"], "earn"): earned(third["total"]["amount"], Tier.SILVER),
        (fourth["id"], "earn"): earned(fourth["total"]["amount"], Tier.GOLD),
    }
    assert ledger == expected
    assert expected[(fourth["id"], "earn")] > fourth["total"]["amount"] // 100  # 1.5x, not 1x

    # Refunding the big SILVER order takes the member back below ¥10,000: GOLD -> SILVER.
    cancelled = await http.post(f"{stack.url('orders')}/v1/orders/{third['id']}/cancel",
                                headers=shopper.who.auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "REFUNDED"
    spend -= third["total"]["amount"]
    assert SILVER <= spend < GOLD
    me = await shopper.settled(Tier.SILVER, spend)
    reversal = {(third["id"], "reverse"): -expected[(third["id"], "earn")]}
    assert await shopper.points() == expected | reversal
    assert me["points_balance"] == sum(expected.values()) + sum(reversal.values())
    await assert_audit_clean(stack)
