"""Order look-ups are the member's own; cancelling refunds; refunds from payments land too."""

from __future__ import annotations

import uuid

from marketplace.payments.v1 import payments_pb2, payments_pb2_grpc

from services.common import grpcutil
from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import SECRET, Stack


async def _place(stack: Stack, member: dict[str, str], quantity: int = 2,
                 key: str | None = None) -> tuple[f.SkuRow, dict]:
    conn = await stack.sql()
    try:
        sku = (await f.product(conn, await f.merchant(conn), skus=[(4_500, 10)]))[0]
    finally:
        await conn.close()
    assert stack.orders is not None
    response = await stack.orders.post(
        "/v1/orders", json=f.order_body((sku.id, quantity)),
        headers={"Authorization": member["Authorization"],
                 "Idempotency-Key": key or uuid.uuid4().hex})
    assert response.status_code == 201, response.text
    return sku, response.json()


async def test_another_members_order_is_not_found(full: Stack) -> None:
    alice, bob = await full.member(), await full.member()
    _, order = await _place(full, alice)
    assert full.orders is not None
    as_bob = {"Authorization": bob["Authorization"]}

    assert (await full.orders.get(f"/v1/orders/{order['id']}", headers=as_bob)).status_code == 404
    cancel = await full.orders.post(f"/v1/orders/{order['id']}/cancel", headers=as_bob)
    assert cancel.status_code == 404
    assert (await full.orders.get("/v1/orders", headers=as_bob)).json()["items"] == []


async def test_the_order_list_pages_through_the_members_orders_newest_first(full: Stack) -> None:
    member = await full.member()
    placed = [(await _place(full, member, quantity=1))[1]["id"] for _ in range(5)]
    assert full.orders is not None
    headers = {"Authorization": member["Authorization"]}

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await full.orders.get("/v1/orders", params=params, headers=headers)).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(placed))


async def test_cancelling_a_confirmed_order_refunds_it_and_returns_the_stock(full: Stack) -> None:
    member = await full.member()
    sku, order = await _place(full, member, quantity=3)
    assert full.orders is not None and full.payments is not None

    response = await full.orders.post(f"/v1/orders/{order['id']}/cancel",
                                      headers={"Authorization": member["Authorization"]})

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "REFUNDED"
    conn = await full.sql()
    try:
        assert await f.stock_of(conn, sku.id) == {
            "stock": 10, "held": 0, "sold": 0, "initial_stock": 10, "restocked": 0}
        events = await eventually(
            lambda: conn.fetch("SELECT subject FROM outbox WHERE aggregate_id = $1 "
                               "AND published_at IS NOT NULL ORDER BY seq", order["id"]),
            until=lambda rows: len(rows) == 3, what="three events published")
        assert [e["subject"] for e in events] == [
            "orders.order.placed", "orders.order.confirmed", "orders.order.refunded"]
    finally:
        await conn.close()
    pay = await full.sql("payments")
    try:
        status = await pay.fetchval("SELECT status FROM payments WHERE order_id = $1",
                                    uuid.UUID(order["id"]))
        assert status == "REFUNDED"
    finally:
        await pay.close()
    again = await full.orders.post(f"/v1/orders/{order['id']}/cancel",
                                   headers={"Authorization": member["Authorization"]})
    assert again.json()["status"] == "REFUNDED"


async def test_a_refund_started_in_payments_lands_on_the_order(full: Stack) -> None:
    member = await full.member()
    sku, order = await _place(full, member, quantity=2)
    channel = grpcutil.channel(f"127.0.0.1:{full.payments_grpc_port}", service="orders",
                               secret=SECRET, timeout_s=5)
    try:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        await stub.Refund(payments_pb2.RefundRequest(
            idempotency_key=f"support:{order['id']}", payment_id=order["payment_id"],
            amount=0, reason="customer service"))
    finally:
        await channel.close()
    assert full.orders is not None
    headers = {"Authorization": member["Authorization"]}

    refunded = await eventually(
        lambda: full.orders.get(f"/v1/orders/{order['id']}", headers=headers),  # type: ignore[union-attr]
        until=lambda r: r.json()["status"] == "REFUNDED", what="order refunded")

    assert refunded.json()["status"] == "REFUNDED"
    conn = await full.sql()
    try:
        assert (await f.stock_of(conn, sku.id))["stock"] == 10
        assert await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_id = $1 "
            "AND subject = 'orders.order.refunded'", order["id"]) == 1
    finally:
        await conn.close()
