"""Top products, payment success rate, member demographics, readiness and the latency metric."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from marketplace.events.v1 import events_pb2 as ev

from services.analytics.domain.window import minute_of
from tests.integration.analytics.conftest import Analytics
from tests.integration.analytics.factories import (
    cny,
    confirmation,
    line,
    money,
    placed_order,
    ts,
)

# See test_gmv.py: /readyz in services/common/web.py still uses the deprecated ORJSONResponse.


async def test_top_products_rank_confirmed_lines_by_gmv(analytics: Analytics) -> None:
    at = datetime.now(UTC) - timedelta(minutes=10)
    phone, laptop, cable = (str(uuid.uuid4()) for _ in range(3))
    confirmed_lines = [
        [line(total=300_000, quantity=2, product_id=phone),
         line(total=2_000, quantity=4, product_id=cable, category="accessories")],
        [line(total=150_000, product_id=phone)],
        [line(total=400_000, product_id=laptop, category="computers")],
    ]
    for lines in confirmed_lines:
        placed = placed_order(total=sum(ln.line_total for ln in lines), lines=lines)
        await analytics.publish("orders.order.placed", placed)
        await analytics.publish("orders.order.confirmed", confirmation(placed, at=at))
    # A huge cable order that was never confirmed must not rank.
    unpaid = placed_order(total=9_000_000, lines=[line(total=9_000_000, product_id=cable)])
    await analytics.publish("orders.order.placed", unpaid)
    await analytics.settled("analytics-orders", 7)

    top = await analytics.report("/v1/analytics/top-products", limit=2)
    everything = await analytics.report("/v1/analytics/top-products")

    assert [(p["product_id"], p["units"], p["gmv"]) for p in top["items"]] == [
        (phone, 3, money(450_000)),
        (laptop, 1, money(400_000)),
    ]
    assert [p["product_id"] for p in everything["items"]] == [phone, laptop, cable]
    assert everything["items"][2]["category"] == "accessories"
    assert everything["items"][2]["units"] == 4


def payment(
    payment_id: str, status: str, *, captured: int = 0, decline: str = "", at: datetime
) -> ev.PaymentChanged:
    return ev.PaymentChanged(
        payment_id=payment_id, order_id=str(uuid.uuid4()), member_id=str(uuid.uuid4()),
        status=status, amount=cny(10_000), captured=captured, decline_code=decline,
        occurred_at=ts(at),
    )


async def test_payment_success_rate_from_payment_events(analytics: Analytics) -> None:
    now = datetime.now(UTC) - timedelta(minutes=1)
    ok, late, declined, open_ = (str(uuid.uuid4()) for _ in range(4))
    events = [
        ("payments.payment.authorized", payment(ok, "AUTHORIZED", at=now)),
        ("payments.payment.captured", payment(ok, "CAPTURED", captured=10_000, at=now)),
        # The capture overtakes its authorization: the payment still ends up captured.
        ("payments.payment.captured", payment(late, "CAPTURED", captured=10_000, at=now)),
        ("payments.payment.authorized", payment(late, "AUTHORIZED", at=now)),
        ("payments.payment.failed", payment(declined, "FAILED", decline="card_declined", at=now)),
        ("payments.payment.authorized", payment(open_, "AUTHORIZED", at=now)),
    ]
    for subject, message in events:
        await analytics.publish(subject, message)
    await analytics.settled("analytics-payments", len(events))

    body = await analytics.report("/v1/analytics/payments")

    assert (body["attempts"], body["succeeded"], body["failed"]) == (4, 2, 1)
    assert body["success_rate"] == pytest.approx(0.5)


async def test_member_registrations_and_tiers_fill_members_dim(analytics: Analytics) -> None:
    member = str(uuid.uuid4())
    t0 = datetime(2025, 11, 11, tzinfo=UTC)
    # The later tier change arrives first; registration comes last of all.
    await analytics.publish("membership.tier.changed", ev.TierChanged(
        member_id=member, old_tier="SILVER", new_tier="GOLD", changed_at=ts(t0 + timedelta(2))))
    await analytics.publish("membership.tier.changed", ev.TierChanged(
        member_id=member, old_tier="BRONZE", new_tier="SILVER", changed_at=ts(t0 + timedelta(1))))
    await analytics.publish("membership.member.registered", ev.MemberRegistered(
        member_id=member, age_band="25-34", region="CN-31", gender="F", registered_at=ts(t0)))
    await analytics.settled("analytics-membership", 3)

    conn = await asyncpg.connect(analytics.db.dsn("analytics"))
    try:
        row = await conn.fetchrow(
            "SELECT age_band, region, gender, registered_at, tier FROM analytics.members_dim "
            "WHERE member_id = $1", uuid.UUID(member),
        )
    finally:
        await conn.close()
    assert row is not None
    assert dict(row) == {
        "age_band": "25-34", "region": "CN-31", "gender": "F", "registered_at": t0,
        "tier": "GOLD",
    }


async def test_readiness_lists_every_consumer_and_metrics_time_confirmations(
    analytics: Analytics,
) -> None:
    at = datetime.now(UTC)
    confirmed = confirmation(placed_order(total=5_000), at=at)
    await analytics.publish("orders.order.confirmed", confirmed)
    await analytics.settled("analytics-orders", 1)

    ready = (await analytics.http.get("/readyz")).json()
    metrics = (await analytics.http.get("/metrics")).text

    assert ready["ready"] is True
    assert set(ready["consumers"]["items"]) == {
        "analytics-orders", "analytics-payments", "analytics-membership",
    }
    assert all(c["lag"] == 0 for c in ready["consumers"]["items"].values())
    counts = [
        float(ln.split()[-1]) for ln in metrics.splitlines()
        if ln.startswith("marketplace_analytics_confirmation_to_gmv_seconds_count")
    ]
    assert counts and counts[0] >= 1
    gmv = await analytics.report("/v1/analytics/gmv")
    assert [p["minute"] for p in gmv["series"]] == [
        minute_of(at).isoformat().replace("+00:00", "Z")
    ]
