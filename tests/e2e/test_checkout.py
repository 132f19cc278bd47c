"""The storefront's checkout through all four services as real processes."""

from __future__ import annotations

import secrets

import asyncpg
import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from services.cli.audit import run_audit
from tests import factories
from tests.e2e.conftest import Stack
from tests.e2e.otlp import ReceivedSpan
from tests.helpers import eventually


async def stock_of(http: httpx.AsyncClient, stack: Stack, product_id: str, sku_id: str) -> int:
    product = (await http.get(f"{stack.url('orders')}/v1/products/{product_id}")).json()
    return next(s["stock_available"] for s in product["skus"] if s["id"] == sku_id)


async def gmv(http: httpx.AsyncClient, stack: Stack) -> dict:
    answer = await http.get(
        f"{stack.url('analytics')}/v1/analytics/gmv", headers={"x-admin-key": stack.admin_key}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def assert_audit_clean(stack: Stack) -> None:
    results = await run_audit(stack.db.auditor_dsn, settle_s=20)
    failures = {c.name: c.violations[:5] for c in results if not c.ok}
    assert not failures, failures


async def test_order_confirms_credits_points_and_counts_in_gmv(stack: Stack, http):
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"), min_stock=2)
    stock_before = await stock_of(http, stack, sku["product_id"], sku["id"])
    gmv_before = (await gmv(http, stack))["gmv"]["amount"]

    placed = await http.post(
        f"{stack.url('orders')}/v1/orders",
        json=factories.order_body(sku["id"], quantity=2),
        headers=buyer.auth | factories.idem(),
    )

    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "CONFIRMED"
    assert order["member_id"] == buyer.id
    total = order["total"]["amount"]
    assert total == 2 * sku["price"]["amount"]  # a new member is BRONZE: no discount
    assert await stock_of(http, stack, sku["product_id"], sku["id"]) == stock_before - 2

    payment = await http.get(
        f"{stack.url('payments')}/v1/payments/{order['payment_id']}", headers=buyer.auth
    )
    assert payment.json()["captured"] == {"amount": total, "currency": "CNY"}

    async def points() -> int:
        me = await http.get(f"{stack.url('membership')}/v1/members/me", headers=buyer.auth)
        return int(me.json()["points_balance"])

    # BRONZE earns 1 point per whole yuan paid; the points arrive through the event.
    await eventually(points, until=lambda p: p == total // 100, what="points credited")
    await eventually(
        lambda: gmv(http, stack),
        until=lambda g: g["gmv"]["amount"] == gmv_before + total,
        what="GMV including the order",
    )
    await assert_audit_clean(stack)


async def test_declined_card_cancels_and_returns_the_stock(stack: Stack, http):
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"))
    before = await stock_of(http, stack, sku["product_id"], sku["id"])

    answer = await http.post(
        f"{stack.url('orders')}/v1/orders",
        json=factories.order_body(sku["id"], token="tok_chargeDeclined"),
        headers=buyer.auth | factories.idem(),
    )

    assert answer.status_code == 402, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"].endswith("/payment-declined")
    assert problem["order"]["status"] == "CANCELLED"
    assert problem["order"]["cancel_reason"] == "payment_declined"
    assert await stock_of(http, stack, sku["product_id"], sku["id"]) == before
    order = await http.get(
        f"{stack.url('orders')}/v1/orders/{problem['order']['id']}", headers=buyer.auth
    )
    assert order.json()["status"] == "CANCELLED"


async def test_same_idempotency_key_gives_the_same_answer_and_one_charge(stack: Stack, http):
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"))
    headers = buyer.auth | factories.idem()
    body = factories.order_body(sku["id"])

    first = await http.post(f"{stack.url('orders')}/v1/orders", json=body, headers=headers)
    second = await http.post(f"{stack.url('orders')}/v1/orders", json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    order_id = first.json()["id"]
    conn = await asyncpg.connect(stack.db.auditor_dsn)
    try:
        orders = await conn.fetchval(
            "SELECT count(*) FROM orders.orders WHERE member_id = $1::uuid", buyer.id
        )
        payments = await conn.fetchval(
            "SELECT count(*) FROM payments.payments WHERE order_id = $1::uuid", order_id
        )
    finally:
        await conn.close()
    assert (orders, payments) == (1, 1)


async def test_one_checkout_is_one_trace_across_all_four_services(stack: Stack, http):
    buyer = await factories.member(http, stack.url("membership"))
    sku = await factories.sku_in_stock(http, stack.url("orders"))
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"  # as a storefront's tracer sends
    placed = await http.post(
        f"{stack.url('orders')}/v1/orders",
        json=factories.order_body(sku["id"]),
        headers=buyer.auth | factories.idem() | {"traceparent": traceparent},
    )
    assert placed.status_code == 201, placed.text
    assert placed.headers["x-trace-id"] == trace_id

    async def services_in_trace() -> set[str]:
        return stack.otlp.services_by_trace().get(trace_id, set())

    found = await eventually(
        services_in_trace,
        until=lambda s: s >= {"orders", "payments", "membership", "analytics"},
        timeout_s=30, what="spans from all four services in one trace",
    )
    assert found >= {"orders", "payments", "membership", "analytics"}

    # The events the checkout wrote into the outboxes (each row keeps the trace it was made in).
    conn = await asyncpg.connect(stack.db.auditor_dsn)
    try:
        events = {
            str(row["event_id"]): row["subject"]
            for schema in ("orders", "payments", "membership")
            for row in await conn.fetch(
                f"SELECT event_id, subject FROM {schema}.outbox "
                "WHERE headers->>'traceparent' LIKE $1", f"00-{trace_id}-%")
        }
    finally:
        await conn.close()
    assert {"orders.order.placed", "orders.order.confirmed",
            "payments.payment.captured"} <= set(events.values())

    confirmed = next(i for i, s in events.items() if s == "orders.order.confirmed")

    async def messaging_spans() -> tuple[dict[str, ReceivedSpan], list[ReceivedSpan]]:
        spans = stack.otlp.spans_of(trace_id)
        producers = {str(s.attributes.get("messaging.message.id", "")): s for s in spans
                     if s.kind == Span.SPAN_KIND_PRODUCER}
        return producers, [s for s in spans if s.kind == Span.SPAN_KIND_CONSUMER]

    def complete(found: tuple[dict[str, ReceivedSpan], list[ReceivedSpan]]) -> bool:
        processed = {(s.service, s.attributes.get("messaging.message.id")) for s in found[1]}
        return (set(events) | {message for _, message in processed} <= set(found[0])
                and {("membership", confirmed), ("analytics", confirmed)} <= processed)

    # OpenTelemetry's messaging conventions: a producer span per publish, in the trace, and
    # the confirmation processed by membership (points) and analytics (GMV) in it too.
    producers, consumers = await eventually(
        messaging_spans, until=complete, timeout_s=30,
        what="a publish span per event of the checkout, process spans of the confirmation",
    )
    for event_id, subject in events.items():
        span = producers[event_id]
        assert span.name == f"publish {subject}"
        assert span.attributes["messaging.system"] == "nats"
        assert span.attributes["messaging.destination.name"] == subject
        assert span.attributes["messaging.operation.type"] == "send"
        assert span.service == subject.split(".")[0]
    # Each `process <subject>` span is a child of the publish span of that very message,
    # and linked to it.
    for span in consumers:
        producer = producers[str(span.attributes["messaging.message.id"])]
        subject = producer.attributes["messaging.destination.name"]
        assert span.name == f"process {subject}"
        assert span.attributes["messaging.system"] == "nats"
        assert span.attributes["messaging.destination.name"] == subject
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.parent_span_id == producer.span_id
        assert (trace_id, producer.span_id) in span.links
