"""The checkout answer and request fingerprint: pure functions behind idempotent replays."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

import pytest

from seeds.catalog import PRODUCTS, SKUS, generate
from services.common.errors import Problem
from services.orders.api.deps import decode_cursor, encode_cursor
from services.orders.domain.order import Line, Order
from services.orders.saga import CheckoutRequest
from services.orders.views import checkout_reply

SKU = uuid.uuid4()


def order(**changes: object) -> Order:
    line = Line(sku_id=SKU, product_id=uuid.uuid4(), merchant_id=uuid.uuid4(),
                category="toys", quantity=2, unit_price=1_500, line_total=3_000)
    base = Order(
        id=uuid.uuid4(), member_id=uuid.uuid4(), status="CONFIRMED", subtotal=3_000,
        discount=0, points_redeemed=0, total=3_000, currency="CNY", payment_token="tok_visa",
        payment_id=uuid.uuid4(), cancel_reason=None, idempotency_key="k",
        payment_deadline=datetime(2025, 11, 11, 0, 15, tzinfo=UTC), points_pending=False,
        created_at=datetime(2025, 11, 11, tzinfo=UTC), lines=(line,))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_confirmed_order_answers_201_with_the_order() -> None:
    reply = checkout_reply(order())

    body = json.loads(reply.body)
    assert (reply.status, reply.media_type) == (201, "application/json")
    assert body["items"][0]["line_total"] == {"amount": 3_000, "currency": "CNY"}
    assert body["created_at"] == "2025-11-11T00:00:00Z"
    assert "payment_token" not in body


def test_a_pending_order_answers_202() -> None:
    assert checkout_reply(order(status="PENDING", payment_id=None)).status == 202


@pytest.mark.parametrize("reason", ["payment_declined", "payment_timeout"])
def test_a_cancelled_order_answers_402_payment_declined_with_the_order(reason: str) -> None:
    reply = checkout_reply(order(status="CANCELLED", cancel_reason=reason))

    body = json.loads(reply.body)
    assert (reply.status, reply.media_type) == (402, "application/problem+json")
    assert body["type"].endswith("/payment-declined")
    assert body["order"]["cancel_reason"] == reason


def test_the_fingerprint_ignores_nothing_that_matters() -> None:
    a = CheckoutRequest(items=((SKU, 1),), payment_token="tok_visa", points_to_redeem=0)

    assert a.fingerprint() == dataclasses.replace(a).fingerprint()
    assert a.fingerprint() != dataclasses.replace(a, items=((SKU, 2),)).fingerprint()
    assert a.fingerprint() != dataclasses.replace(a, payment_token="tok_x").fingerprint()
    assert a.fingerprint() != dataclasses.replace(a, points_to_redeem=1).fingerprint()


def test_a_cursor_round_trips_and_garbage_is_a_422_on_cursor() -> None:
    position = {"t": "2025-11-11T00:00:00+00:00", "i": str(SKU)}

    assert decode_cursor(encode_cursor(position)) == position
    with pytest.raises(Problem) as err:
        decode_cursor("%%%")
    assert (err.value.status, err.value.extra["field"]) == (422, "cursor")


def test_the_seed_catalog_is_the_same_every_time_and_has_its_sizes() -> None:
    first, second = generate(["h"] * 50), generate(["h"] * 50)

    assert first == second
    assert (len(first.products), len(first.skus)) == (PRODUCTS, SKUS)
    assert all(sku[3] > 0 and sku[5] >= 0 for sku in first.skus)
