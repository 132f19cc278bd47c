"""Checkout through REST: paid, declined, out of stock; stock and events follow."""

from __future__ import annotations

import secrets
import uuid

import nats

from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack


async def _catalog(stack: Stack, stock: int = 10) -> list[f.SkuRow]:
    conn = await stack.sql()
    try:
        m = await f.merchant(conn)
        return await f.product(conn, m, skus=[(12_999, stock), (500, stock)])
    finally:
        await conn.close()


async def _subjects_for(stack: Stack, order_id: str) -> list[str]:
    """Subjects of the ORDERS stream's messages about one order, in stream order."""
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("orders.order.>", stream="ORDERS")
        found: list[str] = []
        try:
            msgs = await sub.fetch(100, timeout=1)
        except TimeoutError:
            msgs = []
        for msg in msgs:
            if order_id.encode() in msg.data:
                found.append(msg.subject)
        return found
    finally:
        await nc.close()


async def test_a_paid_order_is_confirmed_takes_stock_and_publishes_placed_and_confirmed(
    full: Stack,
) -> None:
    a, b = await _catalog(full)
    member = await full.member()
    assert full.orders is not None

    response = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 2), (b.id, 1)),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": "k1"})

    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "CONFIRMED"
    assert order["member_id"] == member["id"]
    assert order["subtotal"] == {"amount": 2 * 12_999 + 500, "currency": "CNY"}
    assert order["total"]["amount"] == order["subtotal"]["amount"] - order["discount"]["amount"]
    assert order["payment_id"] is not None
    assert sorted((i["sku_id"], i["quantity"]) for i in order["items"]) == sorted(
        [(str(a.id), 2), (str(b.id), 1)])
    product = (await full.orders.get(f"/v1/products/{a.product_id}")).json()
    stock = {s["id"]: s["stock_available"] for s in product["skus"]}
    assert stock == {str(a.id): 8, str(b.id): 9}
    fetched = await full.orders.get(f"/v1/orders/{order['id']}",
                                    headers={"Authorization": member["Authorization"]})
    assert fetched.json() == order
    subjects = await eventually(
        lambda: _subjects_for(full, order["id"]),
        until=lambda s: len(s) >= 2, what="placed and confirmed on ORDERS")
    assert subjects == ["orders.order.placed", "orders.order.confirmed"]
    conn = await full.sql()
    try:
        assert await f.stock_of(conn, a.id) == {
            "stock": 8, "held": 0, "sold": 2, "initial_stock": 10, "restocked": 0}
    finally:
        await conn.close()


async def test_a_declined_card_cancels_the_order_and_gives_the_stock_back(full: Stack) -> None:
    a, _ = await _catalog(full)
    member = await full.member()
    assert full.orders is not None

    response = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 3), token="tok_chargeDeclined"),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": "k-declined"})

    assert response.status_code == 402, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/payment-declined")
    assert problem["order"]["status"] == "CANCELLED"
    assert problem["order"]["cancel_reason"] == "payment_declined"
    conn = await full.sql()
    try:
        assert await f.stock_of(conn, a.id) == {
            "stock": 10, "held": 0, "sold": 0, "initial_stock": 10, "restocked": 0}
    finally:
        await conn.close()
    subjects = await eventually(
        lambda: _subjects_for(full, problem["order"]["id"]),
        until=lambda s: len(s) >= 2, what="placed and cancelled on ORDERS")
    assert subjects == ["orders.order.placed", "orders.order.cancelled"]


async def test_out_of_stock_answers_409_naming_the_sku_and_creates_no_order(full: Stack) -> None:
    a, b = await _catalog(full, stock=2)
    member = await full.member()
    assert full.orders is not None

    response = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 1), (b.id, 3)),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": "k-oos"})

    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("/out-of-stock")
    assert response.json()["sku_id"] == str(b.id)
    conn = await full.sql()
    try:
        assert await conn.fetchval("SELECT count(*) FROM orders") == 0
        assert (await f.stock_of(conn, a.id))["stock"] == 2  # the first line's hold rolled back
    finally:
        await conn.close()


async def test_an_unknown_sku_is_a_validation_error_on_its_line(full: Stack) -> None:
    a, _ = await _catalog(full)
    member = await full.member()
    assert full.orders is not None

    response = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 1), (uuid.uuid4(), 1)),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": "k-unknown"})

    assert response.status_code == 422
    assert response.json()["field"] == "items[1].sku_id"


async def test_checkout_needs_a_token_and_an_idempotency_key(full: Stack) -> None:
    a, _ = await _catalog(full)
    member = await full.member()
    assert full.orders is not None

    anonymous = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 1)), headers={"Idempotency-Key": "k"})
    keyless = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 1)),
        headers={"Authorization": member["Authorization"]})

    assert anonymous.status_code == 401
    assert keyless.status_code == 400  # the IETF draft's answer to a missing key
    assert keyless.headers["content-type"] == "application/problem+json"
    assert keyless.json()["type"].endswith("/missing-header")
    assert keyless.json()["field"] == "Idempotency-Key"


async def test_the_storefronts_trace_reaches_payments_over_grpc(full: Stack) -> None:
    """Spans are not recorded here (nothing exports them), yet the trace id a storefront sent
    travels through the checkout's gRPC call into what payments publishes."""
    a, _ = await _catalog(full)
    member = await full.member()
    assert full.orders is not None
    trace_id = secrets.token_hex(16)

    response = await full.orders.post(
        "/v1/orders", json=f.order_body((a.id, 1)),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": "traced",
                 "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-00"})

    assert response.status_code == 201, response.text
    assert response.headers["x-trace-id"] == trace_id
    conn = await full.sql("payments")
    try:
        parents = await conn.fetch(
            "SELECT headers->>'traceparent' AS parent FROM outbox WHERE subject = $1",
            "payments.payment.captured")
    finally:
        await conn.close()
    assert [p["parent"].split("-")[1] for p in parents] == [trace_id]
