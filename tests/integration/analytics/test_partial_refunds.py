"""Partial refunds on JetStream: counted in refunds at once, REFUNDED only once complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from services.analytics.domain.window import minute_of
from tests.integration.analytics.conftest import Analytics, Published
from tests.integration.analytics.factories import confirmation, money, placed_order, refund
from tests.integration.analytics.test_gmv import ORDERS, iso, order_rows, series


def _lifecycle(start: datetime, total: int, refunds: list[int]) -> tuple[str, list]:
    """Placed, confirmed, then `refunds` one minute apart, each with its running total."""
    placed = placed_order(total=total)
    confirmed_at = start + timedelta(seconds=10)
    events: list[tuple[str, Message]] = [
        ("orders.order.placed", placed),
        ("orders.order.confirmed", confirmation(placed, at=confirmed_at)),
    ]
    running = 0
    for i, amount in enumerate(refunds, start=1):
        running += amount
        events.append(("orders.order.refunded", refund(
            placed.order_id, amount, confirmed_at + timedelta(minutes=i), refunded_total=running)))
    return placed.order_id, events


async def test_partial_refunds_in_any_order_give_the_same_totals_and_status(
    analytics: Analytics,
) -> None:
    """The same two orders twice: once in their natural order, once backwards."""
    base = minute_of(datetime.now(UTC)) - timedelta(hours=4)
    cases = [([3_000, 4_500], "CONFIRMED"), ([3_000, 17_000], "REFUNDED")]
    reports, order_ids = [], []
    sent: list[Published] = []
    for run, backwards in enumerate((False, True)):
        start = base + timedelta(hours=run)
        ids = []
        for n, (refunds, _) in enumerate(cases):
            order_id, events = _lifecycle(start + timedelta(minutes=10 * n), 20_000, refunds)
            for subject, message in reversed(events) if backwards else events:
                sent.append(await analytics.publish(subject, message))
            ids.append(order_id)
        order_ids.append(ids)
    await analytics.settled(ORDERS, len(sent))

    for run in range(2):
        start = base + timedelta(hours=run)
        body = await analytics.report("/v1/analytics/gmv", **{
            "from": iso(start), "to": iso(start + timedelta(minutes=30))})
        shifted = [(m - start, *rest) for m, *rest in series(body)]
        reports.append((body["gmv"], body["refunds"], body["net_gmv"], body["orders"], shifted))
    assert reports[0] == reports[1]
    assert reports[0][:4] == (money(40_000), money(27_500), money(12_500), 2)
    # Each refund in its own minute (the second order starts ten minutes after the first).
    assert [(m, refunds) for m, _, refunds, _ in reports[0][4] if refunds] == [
        (timedelta(minutes=1), 3_000), (timedelta(minutes=2), 4_500),
        (timedelta(minutes=11), 3_000), (timedelta(minutes=12), 17_000)]
    rows = await order_rows(analytics)
    for ids in order_ids:
        assert [(rows[i]["status"], rows[i]["refunded"]) for i in ids] == [
            ("CONFIRMED", 7_500), ("REFUNDED", 20_000)]

    # Redelivered, every event changes nothing.
    for event in sent:
        await analytics.redeliver(event)
    await analytics.settled(ORDERS, 2 * len(sent))
    again = await analytics.report("/v1/analytics/gmv", **{
        "from": iso(base), "to": iso(base + timedelta(hours=1, minutes=30))})
    assert (again["refunds"], again["net_gmv"]) == (money(55_000), money(25_000))
