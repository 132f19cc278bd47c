"""Checkouts past capacity: refused at once, before any of the checkout's own work."""

from __future__ import annotations

import asyncio
import uuid

from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack
from tests.integration.orders.test_hot_skus import checkout, counters, hot_sku


async def test_a_checkout_past_capacity_is_refused_before_it_is_read(services: Stack) -> None:
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(max_checkouts_in_flight=1, rpc_timeout_s=5.0)
    assert services.orders is not None
    sku = await hot_sku(services.orders, stock=5)
    member = await services.member()
    # The slow card holds the process's only checkout slot for about three seconds.
    slow = asyncio.create_task(checkout(services, member, sku["id"], token="tok_slow"))
    await eventually(lambda: counters(services, sku["id"]), until=lambda c: c["held"] == 1,
                     what="the slow checkout holding its unit")

    shed_before = await _shed_count(services)
    # Neither a token nor a body is looked at: through the app this would be a 401.
    refused = await services.orders.post(
        "/v1/orders", content=b"not even json",
        headers={"Authorization": "Bearer forged", "Idempotency-Key": uuid.uuid4().hex})
    history = await services.orders.get(
        "/v1/orders", headers={"Authorization": member["Authorization"]})
    shed_after = await _shed_count(services)
    held_up = await slow
    after = await checkout(services, member, sku["id"])

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["cache-control"] == "no-store"
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.json() == {
        "type": "/problems/overloaded", "title": "Service overloaded", "status": 503,
        "detail": "too many checkouts in progress; retry in a moment", "instance": "/v1/orders"}
    assert shed_after == shed_before + 1  # counted like any answer of the service
    assert history.status_code == 200  # only new checkouts are refused, not the storefront
    assert held_up.status_code == 202  # the slow card left it PENDING for recovery
    assert after.status_code == 201, after.text  # a free slot: checkouts go through again


async def _shed_count(stack: Stack) -> float:
    """Checkouts answered 503 so far (the metrics registry is shared by the test session)."""
    assert stack.orders is not None
    text = (await stack.orders.get("/metrics")).text
    prefix = 'marketplace_http_requests_total{method="POST",route="/v1/orders",status="503"} '
    values = [float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


async def test_with_a_free_slot_a_checkout_gets_the_apps_own_answers(services: Stack) -> None:
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(max_checkouts_in_flight=1)
    assert services.orders is not None
    sku = await hot_sku(services.orders, stock=5)

    unsigned = await services.orders.post(
        "/v1/orders", json=f.order_body((uuid.UUID(sku["id"]), 1)),
        headers={"Authorization": "Bearer forged", "Idempotency-Key": uuid.uuid4().hex})

    assert unsigned.status_code == 401, unsigned.text


async def test_a_hot_skus_crowd_past_its_gate_is_refused_at_the_door(services: Stack) -> None:
    """While a hot SKU has its limit of checkouts in progress, the rest of its crowd is
    answered the gate's 429 before the app: no token, member or stock is looked at."""
    await services.start_membership()
    await services.start_payments()
    await services.start_orders(hot_sku_max_in_flight=1, rpc_timeout_s=5.0)
    assert services.orders is not None
    sku = await hot_sku(services.orders, stock=5)
    buyers = [await services.member() for _ in range(4)]
    # The slow card holds the SKU's only place in the gate for about three seconds.
    slow = asyncio.create_task(checkout(services, buyers[0], sku["id"], token="tok_slow"))
    await eventually(lambda: counters(services, sku["id"]), until=lambda c: c["held"] == 1,
                     what="the slow checkout holding its unit")

    # Through the app this would be a 401: the refusal comes first.
    forged = await services.orders.post(
        "/v1/orders", json=f.order_body((uuid.UUID(sku["id"]), 1)),
        headers={"Authorization": "Bearer forged", "Idempotency-Key": uuid.uuid4().hex})
    crowd = await asyncio.gather(*(checkout(services, buyers[n % 4], sku["id"])
                                   for n in range(24)))
    during = await counters(services, sku["id"])
    held_up = await slow
    after = await checkout(services, buyers[1], sku["id"])

    assert forged.status_code == 429, forged.text
    assert forged.headers["content-type"] == "application/problem+json"
    assert forged.headers["retry-after"] == "1"
    assert forged.json()["type"].endswith("/rate-limited")
    assert sku["id"] in forged.json()["detail"]
    assert [a.status_code for a in crowd] == [429] * 24
    assert (during["held"], during["sold"]) == (1, 0)  # no unit taken by the crowd
    assert held_up.status_code in (201, 202), held_up.text
    assert after.status_code == 201, after.text  # the gate free: the app answers again
