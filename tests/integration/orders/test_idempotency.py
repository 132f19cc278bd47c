"""Idempotency-Key: replays repeat the first answer byte for byte; one order per key."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack


async def _sku(stack: Stack, stock: int = 100) -> f.SkuRow:
    conn = await stack.sql()
    try:
        return (await f.product(conn, await f.merchant(conn), skus=[(9_900, stock)]))[0]
    finally:
        await conn.close()


async def _count(stack: Stack, service: str, table: str) -> int:
    conn = await stack.sql(service)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_a_replay_returns_the_first_answer_byte_for_byte(full: Stack) -> None:
    sku = await _sku(full)
    member = await full.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "replay-me"}
    assert full.orders is not None

    first = await full.orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)
    # Same request, spelled differently: key order and whitespace do not matter.
    second = await full.orders.post(
        "/v1/orders", headers={**headers, "Content-Type": "application/json"},
        content=b'{"payment": {"token": "tok_visa"}, "items": [{"quantity": 2, "sku_id": "'
        + str(sku.id).encode() + b'"}]}')

    assert first.status_code == 201
    assert (second.status_code, second.content) == (first.status_code, first.content)
    assert await _count(full, "orders", "orders") == 1
    conn = await full.sql()
    try:
        assert (await f.stock_of(conn, sku.id))["sold"] == 2
    finally:
        await conn.close()


async def test_a_declined_answer_is_replayed_too(full: Stack) -> None:
    sku = await _sku(full)
    member = await full.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "declined"}
    body = f.order_body((sku.id, 1), token="tok_chargeDeclined")
    assert full.orders is not None

    first = await full.orders.post("/v1/orders", json=body, headers=headers)
    second = await full.orders.post("/v1/orders", json=body, headers=headers)

    assert first.status_code == 402
    assert (second.status_code, second.content) == (402, first.content)
    assert second.headers["content-type"] == "application/problem+json"


async def test_the_same_key_with_another_body_is_refused(full: Stack) -> None:
    sku = await _sku(full)
    member = await full.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "one-key"}
    assert full.orders is not None

    await full.orders.post("/v1/orders", json=f.order_body((sku.id, 1)), headers=headers)
    other = await full.orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)

    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert await _count(full, "orders", "orders") == 1


async def test_keys_are_scoped_per_member(full: Stack) -> None:
    sku = await _sku(full)
    alice, bob = await full.member(), await full.member()
    assert full.orders is not None

    for member in (alice, bob):
        response = await full.orders.post(
            "/v1/orders", json=f.order_body((sku.id, 1)),
            headers={"Authorization": member["Authorization"], "Idempotency-Key": "shared"})
        assert response.status_code == 201
        assert response.json()["member_id"] == member["id"]


async def test_a_failed_request_does_not_burn_its_key(full: Stack) -> None:
    sku = await _sku(full, stock=1)
    member = await full.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "retry-later"}
    assert full.orders is not None

    refused = await full.orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)
    conn = await full.sql()
    try:
        await conn.execute("UPDATE skus SET stock = stock + 5, restocked = restocked + 5")
    finally:
        await conn.close()
    retried = await full.orders.post("/v1/orders", json=f.order_body((sku.id, 2)), headers=headers)

    assert refused.status_code == 409
    assert retried.status_code == 201


async def test_fifty_concurrent_requests_with_one_key_make_one_order_and_one_payment(
    full: Stack,
) -> None:
    sku = await _sku(full)
    member = await full.member()
    headers = {"Authorization": member["Authorization"], "Idempotency-Key": "stampede"}
    body = f.order_body((sku.id, 1))
    assert full.orders is not None
    orders = full.orders

    responses = await asyncio.gather(
        *(orders.post("/v1/orders", json=body, headers=headers) for _ in range(50)))

    statuses = Counter(r.status_code for r in responses)
    # 409: the key is in flight; 503: shed before any work (more than the process's
    # checkout slots at once), to be retried after Retry-After with the same key.
    assert set(statuses) <= {201, 409, 503}, statuses
    assert statuses[201] >= 1
    assert len({r.content for r in responses if r.status_code == 201}) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["type"].endswith("/idempotency-key-in-flight")
        if r.status_code == 503:
            assert r.json()["type"].endswith("/overloaded")
            assert r.headers["retry-after"] == "1"
    assert await _count(full, "orders", "orders") == 1
    assert await _count(full, "payments", "payments") == 1
    after = await orders.post("/v1/orders", json=body, headers=headers)
    assert after.status_code == 201
    assert after.content == next(r.content for r in responses if r.status_code == 201)
