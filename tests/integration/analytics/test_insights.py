"""Brand insights: a merchant sees only itself, and no group of fewer than 5 buyers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from marketplace.events.v1 import events_pb2 as ev

from services.common.auth import hash_api_key, new_api_key
from tests.integration.analytics.conftest import Analytics
from tests.integration.analytics.factories import cny, money, ts

INSIGHTS = "/v1/insights/merchants/{}"


async def merchant(analytics: Analytics, *, rotate: bool = False) -> tuple[str, str]:
    """A merchant as orders announces it; with `rotate`, its key is replaced once."""
    mid, key = str(uuid.uuid4()), new_api_key()
    at = datetime.now(UTC) - timedelta(hours=1)
    await analytics.publish("orders.merchant.created", ev.MerchantChanged(
        merchant_id=mid, name="Acme", api_key_hash=hash_api_key(key), occurred_at=ts(at)))
    if rotate:
        old, key = key, new_api_key()
        await analytics.publish("orders.merchant.key_rotated", ev.MerchantChanged(
            merchant_id=mid, api_key_hash=hash_api_key(key),
            occurred_at=ts(at + timedelta(minutes=1))))
        return mid, f"{key} {old}"
    return mid, key


async def buy(analytics: Analytics, merchant_id: str, region: str, *, orders: int = 1) -> None:
    """A new buyer in `region` places `orders` confirmed orders of one line at the merchant."""
    member = str(uuid.uuid4())
    await analytics.publish("membership.member.registered", ev.MemberRegistered(
        member_id=member, age_band="25-34", region=region, gender="F",
        registered_at=ts(datetime.now(UTC) - timedelta(days=30))))
    for _ in range(orders):
        line = ev.OrderLine(sku_id=str(uuid.uuid4()), product_id=str(uuid.uuid4()),
                            merchant_id=merchant_id, category="tea", quantity=2,
                            unit_price=500, line_total=1_000)
        await analytics.publish("orders.order.confirmed", ev.OrderConfirmed(
            order_id=str(uuid.uuid4()), member_id=member, lines=[line], total=cny(1_000),
            confirmed_at=ts(datetime.now(UTC) - timedelta(minutes=5))))


async def insights(analytics: Analytics, merchant_id: str, key: str) -> dict[str, object]:
    response = await analytics.http.get(INSIGHTS.format(merchant_id), headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def same_problem(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k not in ("detail", "instance", "trace_id")}


async def test_four_buyers_in_a_region_fold_into_other(analytics: Analytics) -> None:
    mid, key = await merchant(analytics)
    for _ in range(6):
        await buy(analytics, mid, "CN-31")
    for _ in range(4):
        await buy(analytics, mid, "CN-44")
    await buy(analytics, mid, "CN-11", orders=2)
    await analytics.settled("analytics-membership", 11)
    await analytics.settled("analytics-orders", 13)

    body = await insights(analytics, mid, key)

    assert body["buyers_by"]["region"] == [  # type: ignore[index]
        {"group": "CN-31", "buyers": 6, "gmv": money(6_000)},
        {"group": "other", "buyers": 5, "gmv": money(6_000)},
    ]
    assert body["buyers_by"]["age_band"] == [  # type: ignore[index]
        {"group": "25-34", "buyers": 11, "gmv": money(12_000)},
    ]
    assert (body["gmv"], body["units"], body["orders"], body["buyers"]) == (
        money(12_000), 24, 12, 11)
    assert body["average_basket"] == money(1_000)
    assert body["repeat_purchase_rate"] == 1 / 11


async def test_other_below_five_buyers_is_left_out(analytics: Analytics) -> None:
    mid, key = await merchant(analytics)
    for region in ("CN-31",) * 5 + ("CN-44", "CN-11"):
        await buy(analytics, mid, region)
    await analytics.settled("analytics-orders", 8)

    body = await insights(analytics, mid, key)

    assert [g["group"] for g in body["buyers_by"]["region"]] == ["CN-31"]  # type: ignore[index]
    assert body["buyers"] == 7


async def test_a_merchant_key_cannot_read_another_merchants_insights(
    analytics: Analytics,
) -> None:
    mine, keys = await merchant(analytics, rotate=True)
    key, rotated_out = keys.split()
    theirs, _ = await merchant(analytics)
    await buy(analytics, theirs, "CN-31")
    await analytics.settled("analytics-orders", 4)

    other = await analytics.http.get(INSIGHTS.format(theirs), headers={"X-API-Key": key})
    unknown = await analytics.http.get(INSIGHTS.format(uuid.uuid4()), headers={"X-API-Key": key})
    old_key = await analytics.http.get(INSIGHTS.format(mine), headers={"X-API-Key": rotated_out})
    no_key = await analytics.http.get(INSIGHTS.format(mine))
    admin = await analytics.get(INSIGHTS.format(theirs))
    me = await analytics.http.get("/v1/insights/me", headers={"X-API-Key": key})

    assert other.status_code == 404, other.text
    assert other.json()["type"].endswith("/not-found")
    assert unknown.status_code == 404
    # Another merchant's id answers exactly like an id that does not exist.
    assert same_problem(other.json()) == same_problem(unknown.json())
    assert (old_key.status_code, no_key.status_code, admin.status_code) == (401, 401, 401)
    assert me.status_code == 200 and me.json()["merchant_id"] == mine
    assert me.json()["gmv"] == money(0)
