"""A batch that fails as a whole is applied event by event: the rest count once, the bad
one is retried and then dead-lettered, and /readyz shows how often that happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.helpers import eventually
from tests.integration.analytics.conftest import Analytics
from tests.integration.analytics.factories import confirmation, money, placed_order

ORDERS = "analytics-orders"


async def dead_letters(analytics: Analytics) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(analytics.db.dsn("analytics"))
    try:
        return list(await conn.fetch(
            "SELECT event_id, deliveries, error FROM analytics.dead_letter"))
    finally:
        await conn.close()


async def test_a_bad_event_is_dead_lettered_and_its_neighbours_count_once(
    analytics: Analytics,
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=3)
    first, second = placed_order(total=10_000), placed_order(total=30_000)
    broken = placed_order(total=99_999)
    broken.order_id = "not-a-uuid"
    await analytics.publish("orders.order.placed", first)
    await analytics.publish("orders.order.confirmed", confirmation(first, at=at))
    bad = await analytics.publish("orders.order.placed", broken)
    await analytics.publish("orders.order.placed", second)
    await analytics.publish("orders.order.confirmed", confirmation(second, at=at))

    [dead] = await eventually(lambda: dead_letters(analytics), timeout_s=60,
                              what="the broken event dead-lettered")
    await analytics.settled(ORDERS, 4)

    assert dead["event_id"] == bad.event_id
    assert "badly formed hexadecimal UUID" in dead["error"]
    body = await analytics.report("/v1/analytics/gmv")
    assert (body["gmv"], body["orders"]) == (money(40_000), 2)
    ready: dict[str, Any] = (await analytics.http.get("/readyz")).json()
    item = ready["consumers"]["items"][ORDERS]
    assert item["applied"] == 4
    assert item["batch_fallbacks"] == dead["deliveries"]  # each of its deliveries fell back
    assert item["last_event_age_s"] is not None
