"""Live GMV from real events on JetStream: sums, duplicates, delivery order, windows, auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.message import Message

from services.analytics.domain.window import minute_of
from tests.integration.analytics.conftest import Analytics, Published
from tests.integration.analytics.factories import (
    cancellation,
    confirmation,
    money,
    placed_order,
    refund,
)

ORDERS = "analytics-orders"

# services/common/web.py still answers /readyz with ORJSONResponse, which FastAPI 0.165
# deprecates; drop this once web.py uses JSONResponse (reported to the lead).


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def series(body: dict[str, Any]) -> list[tuple[datetime, int, int, int]]:
    return [
        (datetime.fromisoformat(p["minute"]), p["gmv"]["amount"], p["refunds"]["amount"],
         p["orders"])
        for p in body["series"]
    ]


async def order_rows(analytics: Analytics) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(analytics.db.dsn("analytics"))
    try:
        rows = await conn.fetch("SELECT * FROM analytics.orders_fact")
    finally:
        await conn.close()
    return {str(r["order_id"]): r for r in rows}


async def test_gmv_is_the_sum_of_confirmed_totals(analytics: Analytics) -> None:
    now = datetime.now(UTC)
    earlier, later = now - timedelta(minutes=5), now - timedelta(minutes=2)
    # Published first, so that once the confirmations are applied these were too.
    never, gone = placed_order(total=99_999), placed_order(total=88_888)
    await analytics.publish("orders.order.placed", never)
    await analytics.publish("orders.order.placed", gone)
    await analytics.publish("orders.order.cancelled", cancellation(gone))
    for total, at in [(12_999, earlier), (30_000, earlier), (450, later)]:
        placed = placed_order(total=total)
        await analytics.publish("orders.order.placed", placed)
        await analytics.publish("orders.order.confirmed", confirmation(placed, at=at))
    await analytics.settled(ORDERS, 9)

    body = await analytics.report("/v1/analytics/gmv")

    assert body["gmv"] == money(43_449)
    assert body["net_gmv"] == money(43_449)
    assert body["refunds"] == money(0)
    assert body["orders"] == 3
    assert series(body) == [(minute_of(earlier), 42_999, 0, 2), (minute_of(later), 450, 0, 1)]
    assert all(p["minute"].endswith("Z") for p in body["series"])
    rows = await order_rows(analytics)
    assert (rows[never.order_id]["status"], rows[never.order_id]["confirmed_at"]) == (
        "PENDING", None,
    )
    assert (rows[gone.order_id]["status"], rows[gone.order_id]["confirmed_at"]) == (
        "CANCELLED", None,
    )


async def test_redelivered_events_change_nothing(analytics: Analytics) -> None:
    start = minute_of(datetime.now(UTC)) - timedelta(minutes=30)
    window = {"from": iso(start), "to": iso(start + timedelta(minutes=20))}
    sent: list[Published] = []
    for total in (10_000, 25_000):
        placed = placed_order(total=total)
        confirmed = confirmation(placed, at=start + timedelta(minutes=1))
        sent.append(await analytics.publish("orders.order.placed", placed))
        sent.append(await analytics.publish("orders.order.confirmed", confirmed))
    sent.append(await analytics.publish(
        "orders.order.refunded", refund(placed.order_id, 5_000, start + timedelta(minutes=3))
    ))
    await analytics.settled(ORDERS, len(sent))
    first_gmv = await analytics.report("/v1/analytics/gmv", **window)
    first_top = await analytics.report("/v1/analytics/top-products", **window)

    for event in sent:
        await analytics.redeliver(event)
    await analytics.settled(ORDERS, 2 * len(sent))

    assert await analytics.report("/v1/analytics/gmv", **window) == first_gmv
    assert await analytics.report("/v1/analytics/top-products", **window) == first_top
    assert first_gmv["gmv"] == money(35_000)
    assert first_gmv["refunds"] == money(5_000)
    assert first_gmv["net_gmv"] == money(30_000)
    ready = (await analytics.http.get("/readyz")).json()
    assert ready["consumers"]["items"][ORDERS]["duplicates"] == len(sent)


async def test_refund_before_confirmation_gives_the_same_totals(analytics: Analytics) -> None:
    """Order A arrives in its natural order, order B (one hour later) backwards."""
    base = minute_of(datetime.now(UTC)) - timedelta(hours=3)
    results = []
    for offset, backwards in ((timedelta(0), False), (timedelta(hours=1), True)):
        confirmed_at = base + offset + timedelta(seconds=10)
        placed = placed_order(total=20_000)
        events: list[tuple[str, Message]] = [
            ("orders.order.placed", placed),
            ("orders.order.confirmed", confirmation(placed, at=confirmed_at)),
            ("orders.order.refunded",
             refund(placed.order_id, 7_500, confirmed_at + timedelta(minutes=2))),
        ]
        for subject, message in reversed(events) if backwards else events:
            await analytics.publish(subject, message)
        results.append((placed.order_id, base + offset))
    await analytics.settled(ORDERS, 6)

    reports = []
    for _, start in results:
        window = {"from": iso(start), "to": iso(start + timedelta(minutes=10))}
        body = await analytics.report("/v1/analytics/gmv", **window)
        shifted = [(m - start, *rest) for m, *rest in series(body)]
        reports.append((body["gmv"], body["refunds"], body["net_gmv"], body["orders"], shifted))
    assert reports[0] == reports[1]
    assert reports[0][:4] == (money(20_000), money(7_500), money(12_500), 1)
    rows = await order_rows(analytics)
    natural, backwards = (rows[order_id] for order_id, _ in results)
    for row in (natural, backwards):
        assert (row["status"], row["total"], row["refunded"]) == ("REFUNDED", 20_000, 7_500)


async def test_bad_windows_answer_422_naming_the_field(analytics: Analytics) -> None:
    now = minute_of(datetime.now(UTC))
    cases = [
        ("/v1/analytics/gmv", {"from": iso(now), "to": iso(now)}, "from"),
        ("/v1/analytics/gmv", {"from": iso(now), "to": iso(now - timedelta(hours=1))}, "from"),
        ("/v1/analytics/gmv", {"from": iso(now - timedelta(days=32)), "to": iso(now)}, "to"),
        ("/v1/analytics/gmv", {"from": "2025-11-11T00:00:00"}, "from"),
        ("/v1/analytics/gmv", {"to": "yesterday"}, "to"),
        ("/v1/analytics/top-products", {"from": iso(now), "to": iso(now)}, "from"),
        ("/v1/analytics/top-products", {"limit": "0"}, "limit"),
        ("/v1/analytics/top-products", {"limit": "101"}, "limit"),
    ]
    for path, params, field in cases:
        response = await analytics.get(path, **params)
        assert response.status_code == 422, (path, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"].endswith("/validation-error")
        assert body["field"] == field, (params, body)


async def test_reports_need_the_admin_key(analytics: Analytics) -> None:
    for path in ("/v1/analytics/gmv", "/v1/analytics/top-products", "/v1/analytics/payments"):
        missing = await analytics.http.get(path)
        wrong = await analytics.http.get(path, headers={"X-Admin-Key": "not-the-admin-key"})
        for response in (missing, wrong):
            assert response.status_code == 401, (path, response.text)
            assert response.json()["type"].endswith("/unauthorized")
        assert (await analytics.get(path)).status_code == 200


async def test_window_takes_the_minutes_from_from_up_to_before_to(analytics: Analytics) -> None:
    start = minute_of(datetime.now(UTC)) - timedelta(hours=2)
    end = start + timedelta(minutes=10)
    at = {"before": start - timedelta(seconds=1), "first": start + timedelta(seconds=59),
          "last": end - timedelta(seconds=1), "at_to": end}
    totals = {"before": 1, "first": 10, "last": 100, "at_to": 1_000}
    for name, when in at.items():
        placed = placed_order(total=totals[name])
        await analytics.publish("orders.order.confirmed", confirmation(placed, at=when))
    await analytics.settled(ORDERS, len(at))

    body = await analytics.report("/v1/analytics/gmv", **{"from": iso(start), "to": iso(end)})
    # A window starting mid-minute still takes that whole minute.
    mid = await analytics.report(
        "/v1/analytics/gmv", **{"from": iso(start + timedelta(seconds=30)), "to": iso(end)}
    )

    assert (body["gmv"], body["orders"]) == (money(110), 2)
    assert [m for m, *_ in series(body)] == [start, end - timedelta(minutes=1)]
    assert mid["gmv"] == money(110)
    assert (body["from"], body["to"]) == (iso(start), iso(end))
