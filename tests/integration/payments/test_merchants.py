"""Merchants learnt from orders' events: a merchant reads its own balance with its own key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1 import events_pb2 as ev
from marketplace.payments.v1 import payments_pb2 as pb

from services.common import auth
from services.common.events import envelope_headers
from services.common.inbox import Consumer
from tests.helpers import eventually
from tests.integration.payments.harness import ADMIN_KEY, Running, authorize_request

ADMIN = {"X-Admin-Key": ADMIN_KEY}


async def announce(
    payments: Running, subject: str, merchant_id: uuid.UUID, api_key: str,
    at: datetime | None = None,
) -> None:
    """Publish `orders.merchant.*` as the orders outbox would."""
    occurred_at = Timestamp()
    occurred_at.FromDatetime(at or datetime.now(UTC))
    message = ev.MerchantChanged(
        merchant_id=str(merchant_id), name="Lotus Official Store",
        api_key_hash=auth.hash_api_key(api_key), occurred_at=occurred_at,
    )
    headers = envelope_headers(subject, uuid.uuid4(), "orders")
    await payments.svc.infra.bus.publish(subject, message.SerializeToString(), headers)


async def balance(payments: Running, merchant_id: uuid.UUID, key: str) -> httpx.Response:
    return await payments.http.get(
        f"/v1/merchants/{merchant_id}/balance", headers={"X-API-Key": key}
    )


async def until_key_works(payments: Running, merchant_id: uuid.UUID, key: str) -> None:
    async def status() -> int:
        return (await balance(payments, merchant_id, key)).status_code

    await eventually(status, until=lambda s: s == 200, what="merchant key accepted")


async def capture(payments: Running, merchant_id: uuid.UUID, amount: int) -> pb.Payment:
    paid = await payments.stub.Authorize(authorize_request(merchant_id=merchant_id, amount=amount))
    request = pb.CaptureRequest(idempotency_key=f"cap-{paid.id}", payment_id=paid.id)
    return await payments.stub.Capture(request)


async def test_a_merchant_reads_its_own_balance_and_no_one_elses(payments: Running) -> None:
    lotus, jade = uuid.uuid4(), uuid.uuid4()
    lotus_key, jade_key = auth.new_api_key(), auth.new_api_key()
    assert (await balance(payments, lotus, lotus_key)).status_code == 401  # not yet known
    await announce(payments, "orders.merchant.created", lotus, lotus_key)
    await announce(payments, "orders.merchant.created", jade, jade_key)
    await capture(payments, lotus, 10_000)

    await until_key_works(payments, lotus, lotus_key)
    own = await balance(payments, lotus, lotus_key)
    assert own.json() == {"merchant_id": str(lotus),
                          "balance": {"amount": 9_500, "currency": "CNY"}}
    # Another merchant's balance answers exactly like a merchant that does not exist.
    assert (await balance(payments, jade, lotus_key)).status_code == 404
    assert (await balance(payments, uuid.uuid4(), lotus_key)).status_code == 404
    assert (await balance(payments, lotus, "mk_guessed")).status_code == 401
    assert (await payments.http.get(f"/v1/merchants/{lotus}/balance")).status_code == 401
    by_admin = await payments.http.get(f"/v1/merchants/{jade}/balance", headers=ADMIN)
    assert by_admin.json()["balance"] == {"amount": 0, "currency": "CNY"}
    wrong_admin = await payments.http.get(
        f"/v1/merchants/{jade}/balance", headers={"X-Admin-Key": "not-the-admin-key-0"})
    assert wrong_admin.status_code == 401
    stored = await payments.sql("SELECT api_key_hash FROM merchants")
    assert lotus_key not in {r["api_key_hash"] for r in stored}  # only hashes are kept


async def test_a_rotated_key_replaces_the_old_one_and_a_stale_event_does_not_undo_it(
    payments: Running,
) -> None:
    merchant = uuid.uuid4()
    old_key, new_key = auth.new_api_key(), auth.new_api_key()
    created_at = datetime.now(UTC) - timedelta(minutes=5)
    await announce(payments, "orders.merchant.created", merchant, old_key, created_at)
    await until_key_works(payments, merchant, old_key)

    await announce(payments, "orders.merchant.key_rotated", merchant, new_key)
    await until_key_works(payments, merchant, new_key)
    assert (await balance(payments, merchant, old_key)).status_code == 401

    # A late copy of the creation (older than the rotation) must not bring the old key back.
    await announce(payments, "orders.merchant.created", merchant, old_key, created_at)
    consumer = payments.svc.infra.consumers[0]
    await eventually(lambda: _applied(consumer), until=lambda n: n >= 3, what="3 events applied")
    assert (await balance(payments, merchant, old_key)).status_code == 401
    assert (await balance(payments, merchant, new_key)).status_code == 200


async def _applied(consumer: Consumer) -> int:
    return consumer.applied_total


async def test_admins_list_a_merchants_payments_page_by_page(payments: Running) -> None:
    merchant = uuid.uuid4()
    mine = [(await capture(payments, merchant, 1_000 + i)).id for i in range(3)]
    await capture(payments, uuid.uuid4(), 5_000)  # another merchant's

    first = await payments.http.get(
        "/v1/admin/payments", params={"merchant_id": str(merchant), "limit": 2}, headers=ADMIN)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [i["id"] for i in page["items"]] == mine[:0:-1]  # newest first
    second = (await payments.http.get(
        "/v1/admin/payments", headers=ADMIN,
        params={"merchant_id": str(merchant), "limit": 2, "cursor": page["next_cursor"]},
    )).json()
    assert [i["id"] for i in second["items"]] == mine[:1]
    assert second["next_cursor"] is None
    assert {i["merchant_id"] for i in page["items"] + second["items"]} == {str(merchant)}
    refused = await payments.http.get(
        "/v1/admin/payments", params={"merchant_id": str(merchant)})
    assert refused.status_code == 401


async def test_an_unknown_merchants_balance_is_not_found(payments: Running) -> None:
    """Known: announced by orders' events, or party to a payment; anyone else is a 404."""
    stranger = await payments.http.get(f"/v1/merchants/{uuid.uuid4()}/balance", headers=ADMIN)
    assert stranger.status_code == 404, stranger.text
    assert stranger.headers["content-type"] == "application/problem+json"
    assert stranger.json()["type"].endswith("/not-found")

    unannounced = uuid.uuid4()  # orders' event not seen yet, but a payment names it
    await capture(payments, unannounced, 2_000)
    paid = await payments.http.get(f"/v1/merchants/{unannounced}/balance", headers=ADMIN)
    assert paid.json()["balance"] == {"amount": 1_900, "currency": "CNY"}
    spec = (await payments.http.get("/openapi.json")).json()
    assert "404" in spec["paths"]["/v1/merchants/{merchant_id}/balance"]["get"]["responses"]
