"""REST look-ups: the paying member sees their payment, nobody else does; admin endpoints."""

from __future__ import annotations

import uuid

from marketplace.payments.v1 import payments_pb2 as pb

from tests.integration.payments.harness import ADMIN_KEY, Running, authorize_request


async def test_the_paying_member_sees_their_payment(payments: Running) -> None:
    member = uuid.uuid4()
    paid = await payments.stub.Authorize(authorize_request(member_id=member, amount=12_999))
    await payments.stub.Capture(pb.CaptureRequest(idempotency_key="c", payment_id=paid.id))

    response = await payments.http.get(
        f"/v1/payments/{paid.id}", headers=payments.issuer.bearer(member)
    )
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("id", "order_id", "status", "amount", "captured", "refunded")} == {
        "id": paid.id, "order_id": paid.order_id, "status": "CAPTURED",
        "amount": {"amount": 12_999, "currency": "CNY"},
        "captured": {"amount": 12_999, "currency": "CNY"},
        "refunded": {"amount": 0, "currency": "CNY"},
    }


async def test_another_members_payment_is_not_found(payments: Running) -> None:
    paid = await payments.stub.Authorize(authorize_request())
    response = await payments.http.get(
        f"/v1/payments/{paid.id}", headers=payments.issuer.bearer(uuid.uuid4())
    )
    assert response.status_code == 404
    assert response.json()["type"].endswith("/not-found")
    missing = await payments.http.get(
        f"/v1/payments/{uuid.uuid4()}", headers=payments.issuer.bearer(uuid.uuid4())
    )
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith("payment ")  # the same answer as for a stranger


async def test_without_a_token_the_answer_is_401(payments: Running) -> None:
    response = await payments.http.get(f"/v1/payments/{uuid.uuid4()}")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    forged = await payments.http.get(
        f"/v1/payments/{uuid.uuid4()}", headers={"Authorization": "Bearer not.a.token"}
    )
    assert forged.status_code == 401


async def test_admins_find_payments_by_order(payments: Running) -> None:
    paid = await payments.stub.Authorize(authorize_request())
    await payments.stub.Authorize(authorize_request())  # another order's payment

    refused = await payments.http.get("/v1/admin/payments", params={"order_id": paid.order_id})
    assert refused.status_code == 401
    response = await payments.http.get(
        "/v1/admin/payments", params={"order_id": paid.order_id},
        headers={"X-Admin-Key": ADMIN_KEY},
    )
    assert response.status_code == 200
    [item] = response.json()["items"]
    assert (item["id"], item["member_id"], item["status"]) == (
        paid.id, paid.member_id, "AUTHORIZED")


async def test_admin_listing_pages_with_a_cursor(payments: Running) -> None:
    ids = {(await payments.stub.Authorize(authorize_request())).id for _ in range(3)}
    admin = {"X-Admin-Key": ADMIN_KEY}
    first = (await payments.http.get("/v1/admin/payments?limit=2", headers=admin)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (await payments.http.get(
        "/v1/admin/payments", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin
    )).json()
    assert {i["id"] for i in first["items"] + second["items"]} == ids


async def test_merchant_balance_needs_the_admin_key(payments: Running) -> None:
    response = await payments.http.get(f"/v1/merchants/{uuid.uuid4()}/balance")
    assert response.status_code == 401
