"""Hot SKUs: stock in buckets, no oversell, admission limits, sold-out memory; expired keys."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx

from services.orders.store import stock
from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack
from tests.integration.orders.test_merchants import key, new_merchant, product_body


async def hot_sku(orders: httpx.AsyncClient, stock: int, price: int = 9_900) -> dict[str, Any]:
    merchant = await new_merchant(orders)
    body = product_body(hot=True, skus=[{"attributes": {"edition": "11.11"},
                                         "price": {"amount": price, "currency": "CNY"},
                                         "stock": stock}])
    made = await orders.post("/v1/merchant/products", json=body, headers=key(merchant))
    assert made.status_code == 201, made.text
    return made.json()["skus"][0] | {"merchant": merchant, "product_id": made.json()["id"]}


async def counters(stack: Stack, sku_id: str) -> dict[str, Any]:
    conn = await stack.sql()
    try:
        row = await conn.fetchrow("SELECT stock, held, sold, restocked, bucketed FROM skus "
                                  "WHERE id = $1", uuid.UUID(sku_id))
        buckets = await conn.fetch("SELECT stock FROM sku_stock_buckets WHERE sku_id = $1 "
                                   "ORDER BY bucket", uuid.UUID(sku_id))
    finally:
        await conn.close()
    return dict(row) | {"buckets": [b["stock"] for b in buckets]}


def checkout(stack: Stack, member: dict[str, str], sku_id: str, quantity: int = 1,
             token: str = "tok_visa") -> Any:
    assert stack.orders is not None
    return stack.orders.post(
        "/v1/orders", json=f.order_body((uuid.UUID(sku_id), quantity), token=token),
        headers={"Authorization": member["Authorization"], "Idempotency-Key": uuid.uuid4().hex})


async def test_a_hot_sku_sells_exactly_its_stock_from_its_buckets(services: Stack) -> None:
    # Admission wide open: every one of the 40 buyers reaches the buckets at once.
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(hot_sku_max_in_flight=64, max_checkouts_in_flight=64)
    full = services
    assert full.orders is not None
    sku = await hot_sku(full.orders, stock=12)
    assert (await counters(full, sku["id"]))["buckets"] == [2, 2, 2, 2, 1, 1, 1, 1]
    members = [await full.member() for _ in range(6)]

    answers = await asyncio.gather(*(checkout(full, members[i % 6], sku["id"])
                                     for i in range(40)))

    statuses = Counter(a.status_code for a in answers)
    assert statuses[201] == 12, statuses
    assert set(statuses) <= {201, 409, 429}, statuses
    after = await counters(full, sku["id"])
    assert (after["stock"], after["held"], after["sold"]) == (0, 0, 12)
    assert after["buckets"] == [0] * 8


async def test_restock_spreads_over_buckets_and_a_cold_product_gathers_them(full: Stack) -> None:
    assert full.orders is not None
    sku = await hot_sku(full.orders, stock=3)
    member = await full.member()
    assert (await checkout(full, member, sku["id"], quantity=3)).status_code == 201  # 3 buckets

    restocked = await full.orders.post(f"/v1/merchant/skus/{sku['id']}/restock",
                                       json={"quantity": 10}, headers=key(sku["merchant"]))
    spread = await counters(full, sku["id"])
    cooled = await full.orders.patch(f"/v1/merchant/products/{sku['product_id']}",
                                     json={"hot": False}, headers=key(sku["merchant"]))
    gathered = await counters(full, sku["id"])

    assert restocked.json()["stock_available"] == 10
    assert spread["buckets"] == [2, 2, 1, 1, 1, 1, 1, 1] and spread["stock"] == 10
    assert cooled.json()["hot"] is False
    assert gathered["buckets"] == [] and not gathered["bucketed"] and gathered["stock"] == 10
    assert (await checkout(full, member, sku["id"], quantity=10)).status_code == 201


async def bucket_elsewhere(stack: Stack, sku_id: str, *, buckets: int) -> None:
    """(Un)bucket the SKU as another orders replica would: this process is not told."""
    conn = await stack.sql()
    try:
        async with conn.transaction():
            await stock.set_bucketed(conn, uuid.UUID(sku_id), buckets=buckets)
    finally:
        await conn.close()


async def test_a_sku_made_hot_while_remembered_cold_still_sells_from_its_buckets(
    full: Stack,
) -> None:
    """Each orders process remembers for a few seconds whether a SKU is bucketed; when
    another replica changes that, a checkout here finds its memory out of date, rolls back
    and retries with the truth: never a false 409, never stock taken from the wrong rows."""
    assert full.orders is not None
    merchant = await new_merchant(full.orders)
    made = await full.orders.post("/v1/merchant/products", headers=key(merchant), json=(
        product_body(skus=[{"attributes": {"edition": "late"}, "stock": 10,
                            "price": {"amount": 4_900, "currency": "CNY"}}])))
    assert made.status_code == 201, made.text
    sku_id = made.json()["skus"][0]["id"]
    member = await full.member()
    assert (await checkout(full, member, sku_id)).status_code == 201  # remembered: cold

    await bucket_elsewhere(full, sku_id, buckets=8)  # made hot by another replica
    second = await checkout(full, member, sku_id, quantity=2)

    assert second.status_code == 201, second.text
    after = await counters(full, sku_id)
    assert after["bucketed"] and sum(after["buckets"]) == after["stock"] == 7
    assert (after["held"], after["sold"]) == (0, 3)

    # Read afresh (the stale memory was dropped): remembered hot now.
    assert (await checkout(full, member, sku_id)).status_code == 201
    await bucket_elsewhere(full, sku_id, buckets=0)  # and cold again, elsewhere
    third = await checkout(full, member, sku_id, quantity=6)

    assert third.status_code == 201, third.text
    final = await counters(full, sku_id)
    assert (final["bucketed"], final["buckets"], final["stock"], final["sold"]) == (
        False, [], 0, 10)


async def test_a_hot_sku_admits_a_bounded_crowd_and_says_retry_after(
    services: Stack,
) -> None:
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(hot_sku_max_in_flight=1, rpc_timeout_s=1.0)
    assert services.orders is not None
    sku = await hot_sku(services.orders, stock=5)
    first, second = await services.member(), await services.member()

    slow = asyncio.create_task(checkout(services, first, sku["id"], token="tok_slow"))
    await eventually(lambda: counters(services, sku["id"]), until=lambda c: c["held"] == 1,
                     what="the slow checkout holding its unit")
    refused = await checkout(services, second, sku["id"])
    held_up = await slow

    assert refused.status_code == 429, refused.text
    assert refused.json()["type"].endswith("/rate-limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert held_up.status_code == 202  # the slow card left it PENDING for recovery
    assert (await checkout(services, second, sku["id"])).status_code == 201


async def test_a_sold_out_hot_sku_answers_from_memory_until_restocked(services: Stack) -> None:
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(sold_out_cache_s=600)
    assert services.orders is not None
    sku = await hot_sku(services.orders, stock=1)
    member = await services.member()
    assert (await checkout(services, member, sku["id"])).status_code == 201
    assert (await checkout(services, member, sku["id"])).status_code == 409
    conn = await services.sql()
    try:  # stock returns behind the service's back: it still remembers "sold out"
        await conn.execute("UPDATE sku_stock_buckets SET stock = 1 WHERE sku_id = $1 AND "
                           "bucket = 0", uuid.UUID(sku["id"]))
        await conn.execute("UPDATE skus SET stock = 1, restocked = 1 WHERE id = $1",
                           uuid.UUID(sku["id"]))
    finally:
        await conn.close()

    remembered = await checkout(services, member, sku["id"])
    await services.orders.post(f"/v1/merchant/skus/{sku['id']}/restock", json={"quantity": 1},
                               headers=key(sku["merchant"]))
    after_restock = await checkout(services, member, sku["id"])

    assert remembered.status_code == 409
    assert remembered.json()["type"].endswith("/out-of-stock")
    assert after_restock.status_code == 201, after_restock.text


async def test_a_member_checking_out_too_fast_is_rate_limited(services: Stack) -> None:
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(member_checkout_burst=2, member_checkout_per_s=0.01)
    assert services.orders is not None
    sku = await hot_sku(services.orders, stock=10)
    member, other = await services.member(), await services.member()

    answers = [await checkout(services, member, sku["id"]) for _ in range(3)]
    others = await checkout(services, other, sku["id"])

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert others.status_code == 201


async def test_an_expired_idempotency_key_is_a_new_key(full: Stack) -> None:
    assert full.orders is not None
    sku = await hot_sku(full.orders, stock=5)
    member = await full.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "daily"}
    first = await full.orders.post("/v1/orders", json=f.order_body((uuid.UUID(sku["id"]), 1)),
                                   headers=headers)
    other_body = f.order_body((uuid.UUID(sku["id"]), 2))
    reused = await full.orders.post("/v1/orders", json=other_body, headers=headers)
    conn = await full.sql()
    try:
        await conn.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 s'")
    finally:
        await conn.close()

    again = await full.orders.post("/v1/orders", json=other_body, headers=headers)

    assert first.status_code == 201 and reused.status_code == 422
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first.json()["id"]
