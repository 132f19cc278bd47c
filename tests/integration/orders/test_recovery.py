"""Recovery: orders left PENDING (payments unreachable) end CONFIRMED or CANCELLED."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack


async def _sku(stack: Stack) -> f.SkuRow:
    conn = await stack.sql()
    try:
        return (await f.product(conn, await f.merchant(conn), skus=[(9_900, 5)]))[0]
    finally:
        await conn.close()


async def _stock(stack: Stack, sku: f.SkuRow) -> dict[str, int]:
    conn = await stack.sql()
    try:
        return await f.stock_of(conn, sku.id)
    finally:
        await conn.close()


async def test_an_order_placed_while_payments_is_down_is_confirmed_once_it_is_back(
    services: Stack,
) -> None:
    await services.start_membership()
    await services.start_orders()  # payments' port has no server yet
    sku = await _sku(services)
    member = await services.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "while-down"}
    assert services.orders is not None
    orders = services.orders

    accepted = await orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)

    assert accepted.status_code == 202, accepted.text
    order_id = accepted.json()["id"]
    assert accepted.json()["status"] == "PENDING"
    assert (await _stock(services, sku))["held"] == 2
    in_flight = await orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)
    assert in_flight.status_code == 409
    assert in_flight.json()["type"].endswith("/idempotency-key-in-flight")

    await services.start_payments()
    final = await eventually(
        lambda: orders.get(f"/v1/orders/{order_id}", headers=headers),
        until=lambda r: r.json()["status"] != "PENDING", timeout_s=60, what="order settled")

    assert final.json()["status"] == "CONFIRMED"
    assert final.json()["payment_id"] is not None
    assert (await _stock(services, sku))["sold"] == 2
    replay = await orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)
    assert replay.status_code == 201
    assert replay.json() == final.json()


async def test_an_order_still_unpaid_at_its_deadline_is_cancelled_and_its_stock_released(
    services: Stack,
) -> None:
    await services.start_membership()
    await services.start_orders(payment_deadline_s=1.0)
    sku = await _sku(services)
    member = await services.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "too-late"}
    assert services.orders is not None
    orders = services.orders
    accepted = await orders.post("/v1/orders", json=f.order_body((sku.id, 1)), headers=headers)
    assert accepted.status_code == 202, accepted.text
    order_id = accepted.json()["id"]
    placed_at = datetime.fromisoformat(accepted.json()["created_at"])

    async def now() -> datetime:
        return datetime.now(UTC)

    await eventually(now, until=lambda t: (t - placed_at).total_seconds() > 1.5,
                     what="payment deadline passed")
    await services.start_payments()
    final = await eventually(
        lambda: orders.get(f"/v1/orders/{order_id}", headers=headers),
        until=lambda r: r.json()["status"] != "PENDING", timeout_s=60, what="order settled")

    assert final.json()["status"] == "CANCELLED"
    assert final.json()["cancel_reason"] == "payment_timeout"
    assert await _stock(services, sku) == {
        "stock": 5, "held": 0, "sold": 0, "initial_stock": 5, "restocked": 0}
    replay = await orders.post("/v1/orders", json=f.order_body((sku.id, 1)), headers=headers)
    assert replay.status_code == 402
    assert replay.json()["order"] == final.json()
