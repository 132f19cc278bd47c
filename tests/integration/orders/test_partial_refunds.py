"""Partial refunds started in payments land on the order: money only until they reach its total."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
from marketplace.events.v1 import events_pb2 as ev

from services.common.events import envelope_headers
from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import ADMIN_KEY, Stack

PRICE, QUANTITY = 4_500, 2
TOTAL = PRICE * QUANTITY


async def _sku(stack: Stack) -> f.SkuRow:
    """A SKU priced PRICE with 10 units, of a new merchant."""
    conn = await stack.sql()
    try:
        return (await f.product(conn, await f.merchant(conn), skus=[(PRICE, 10)]))[0]
    finally:
        await conn.close()


async def _confirmed_order(stack: Stack, member: dict[str, str]) -> tuple[f.SkuRow, dict]:
    sku = await _sku(stack)
    assert stack.orders is not None
    placed = await stack.orders.post(
        "/v1/orders", json=f.order_body((sku.id, QUANTITY)),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": uuid.uuid4().hex})
    assert placed.status_code == 201, placed.text
    assert placed.json()["refunded"] == {"amount": 0, "currency": "CNY"}
    return sku, placed.json()


async def _admin_refund(stack: Stack, payment_id: str, amount: int | None, key: str) -> Any:
    assert stack.payments is not None
    body: dict[str, Any] = {"reason": "goodwill"}
    if amount is not None:
        body["amount"] = {"amount": amount, "currency": "CNY"}
    answer = await stack.payments.post(
        f"/v1/admin/payments/{payment_id}/refunds", json=body,
        headers={"X-Admin-Key": ADMIN_KEY, "Idempotency-Key": key})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _order_once(stack: Stack, member: dict[str, str], order_id: str,
                      refunded: int) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        assert stack.orders is not None
        answer = await stack.orders.get(f"/v1/orders/{order_id}",
                                        headers={"Authorization": member["Authorization"]})
        body: dict[str, Any] = answer.json()
        return body

    return await eventually(get, until=lambda o: o["refunded"]["amount"] == refunded,
                            what=f"order refunded {refunded}")


async def _refund_events(stack: Stack, order_id: str) -> list[ev.OrderRefunded]:
    conn = await stack.sql()
    try:
        rows = await conn.fetch(
            "SELECT payload FROM outbox WHERE aggregate_id = $1 "
            "AND subject = 'orders.order.refunded' ORDER BY seq", order_id)
    finally:
        await conn.close()
    return [ev.OrderRefunded.FromString(r["payload"]) for r in rows]


async def test_partial_refunds_add_up_on_the_order_and_the_rest_refunds_it(full: Stack) -> None:
    member = await full.member()
    sku, order = await _confirmed_order(full, member)

    await _admin_refund(full, order["payment_id"], 2_000, "t-1")
    first = await _order_once(full, member, order["id"], 2_000)
    await _admin_refund(full, order["payment_id"], 1_500, "t-2")
    second = await _order_once(full, member, order["id"], 3_500)

    assert first["status"] == second["status"] == "CONFIRMED"
    conn = await full.sql()
    try:  # money only: the units stay sold
        assert await f.stock_of(conn, sku.id) == {
            "stock": 8, "held": 0, "sold": 2, "initial_stock": 10, "restocked": 0}
    finally:
        await conn.close()

    await _admin_refund(full, order["payment_id"], None, "t-3")
    done = await _order_once(full, member, order["id"], TOTAL)

    assert done["status"] == "REFUNDED"
    conn = await full.sql()
    try:
        assert (await f.stock_of(conn, sku.id))["stock"] == 10
    finally:
        await conn.close()
    events = await _refund_events(full, order["id"])
    assert [(e.refunded.amount, e.refunded_total.amount) for e in events] == [
        (2_000, 2_000), (1_500, 3_500), (5_500, TOTAL)]


async def _publish_refund_report(stack: Stack, order: dict[str, Any], refunded: int) -> str:
    """A payments.payment.refunded event as payments publishes it (running totals)."""
    event_id = uuid.uuid4()
    message = ev.PaymentChanged(
        payment_id=order["payment_id"], order_id=order["id"], member_id=order["member_id"],
        status="PARTIALLY_REFUNDED", captured=TOTAL, refunded=refunded)
    nc = await nats.connect(stack.nats_url)
    try:
        subject = "payments.payment.refunded"
        await nc.jetstream().publish(subject, message.SerializeToString(),
                                     headers=envelope_headers(subject, event_id, "payments"))
    finally:
        await nc.close()
    return str(event_id)


async def test_an_older_or_repeated_refund_report_changes_nothing(full: Stack) -> None:
    member = await full.member()
    _, order = await _confirmed_order(full, member)
    await _admin_refund(full, order["payment_id"], 3_000, "t-1")
    await _order_once(full, member, order["id"], 3_000)

    # Overtaken by the 3 000 report, then the same running total again under a new id.
    stale = [await _publish_refund_report(full, order, amount) for amount in (1_000, 3_000)]

    conn = await full.sql()
    try:
        await eventually(
            lambda: conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'orders-payments' "
                                  "AND event_id = ANY($1::uuid[])", stale),
            until=lambda n: n == 2, what="both reports applied")
        assert await conn.fetchval("SELECT refunded FROM orders WHERE id = $1",
                                   uuid.UUID(order["id"])) == 3_000
    finally:
        await conn.close()
    assert [e.refunded.amount for e in await _refund_events(full, order["id"])] == [3_000]


async def test_cancelling_after_a_partial_refund_refunds_the_rest(full: Stack) -> None:
    member = await full.member()
    sku, order = await _confirmed_order(full, member)
    await _admin_refund(full, order["payment_id"], 1_000, "t-1")
    await _order_once(full, member, order["id"], 1_000)
    assert full.orders is not None

    cancelled = await full.orders.post(f"/v1/orders/{order['id']}/cancel",
                                       headers={"Authorization": member["Authorization"]})

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "REFUNDED"
    assert cancelled.json()["refunded"] == {"amount": TOTAL, "currency": "CNY"}
    events = await _refund_events(full, order["id"])
    assert [(e.refunded.amount, e.refunded_total.amount) for e in events] == [
        (1_000, 1_000), (TOTAL - 1_000, TOTAL)]
    pay = await full.sql("payments")
    try:
        row = await pay.fetchrow("SELECT status, refunded FROM payments WHERE order_id = $1",
                                 uuid.UUID(order["id"]))
        assert dict(row) == {"status": "REFUNDED", "refunded": TOTAL}
    finally:
        await pay.close()
    # payments' own reports, the last one of the rest, find the order already REFUNDED.
    await _reports_applied(full, order["payment_id"], count=2)
    assert len(await _refund_events(full, order["id"])) == 2
    conn = await full.sql()
    try:
        assert (await f.stock_of(conn, sku.id))["stock"] == 10
    finally:
        await conn.close()


async def _reports_applied(stack: Stack, payment_id: str, *, count: int) -> None:
    """Wait until orders has consumed payments' `count` refund reports for the payment."""
    pay = await stack.sql("payments")
    try:
        ids = await eventually(
            lambda: pay.fetch("SELECT event_id FROM outbox WHERE aggregate_id = $1 "
                              "AND subject = 'payments.payment.refunded'", payment_id),
            until=lambda rows: len(rows) == count, what=f"{count} refund reports")
    finally:
        await pay.close()
    conn = await stack.sql()
    try:
        await eventually(
            lambda: conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'orders-payments' "
                                  "AND event_id = ANY($1::uuid[])", [r["event_id"] for r in ids]),
            until=lambda n: n == count, what="the refund reports consumed by orders")
    finally:
        await conn.close()


async def test_a_refund_of_a_paid_order_not_yet_confirmed_lands_once_it_is(
    services: Stack,
) -> None:
    """Payments refunds part of a sale while orders holds the order PENDING (between the
    sale and the confirmation): the report waits for the confirmation, then lands once."""
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(fault_hold_at="after_authorize", fault_hold_s=3.0,
                                recovery_grace_s=30.0)
    member = await services.member()
    sku = await _sku(services)
    assert services.orders is not None
    placing = asyncio.create_task(services.orders.post(
        "/v1/orders", json=f.order_body((sku.id, QUANTITY)),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": "held-1"}))
    pay = await services.sql("payments")
    try:
        paid = await eventually(
            lambda: pay.fetchrow("SELECT id, order_id, status FROM payments"),
            until=lambda row: row is not None and row["status"] == "CAPTURED",
            what="the sale captured")
    finally:
        await pay.close()
    order_id = str(paid["order_id"])
    await _admin_refund(services, str(paid["id"]), 2_000, "while-pending")
    conn = await services.sql()
    try:
        assert await conn.fetchval("SELECT status FROM orders WHERE id = $1",
                                   paid["order_id"]) == "PENDING"
    finally:
        await conn.close()

    placed = await placing
    assert placed.status_code == 201, placed.text
    done = await _order_once(services, member, order_id, 2_000)
    assert done["status"] == "CONFIRMED"
    await _reports_applied(services, str(paid["id"]), count=1)
    events = await _refund_events(services, order_id)
    assert [(e.refunded.amount, e.refunded_total.amount) for e in events] == [(2_000, 2_000)]
