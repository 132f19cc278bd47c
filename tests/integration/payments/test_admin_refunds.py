"""Admin refunds over REST: idempotent on the key, bounded by what was captured, evented."""

from __future__ import annotations

import uuid

from marketplace.payments.v1 import payments_pb2 as pb

from tests.integration.payments.harness import (
    ADMIN_KEY,
    Running,
    authorize_request,
    ledger_totals,
    read_events,
    unbalanced_entries,
)

ADMIN = {"X-Admin-Key": ADMIN_KEY}


async def captured(payments: Running, merchant_id: uuid.UUID, amount: int) -> pb.Payment:
    paid = await payments.stub.Authorize(authorize_request(merchant_id=merchant_id, amount=amount))
    request = pb.CaptureRequest(idempotency_key=f"cap-{paid.id}", payment_id=paid.id)
    return await payments.stub.Capture(request)


def refund_path(payment_id: str) -> str:
    return f"/v1/admin/payments/{payment_id}/refunds"


async def test_partial_then_full_admin_refunds_replay_and_publish(payments: Running) -> None:
    merchant = uuid.uuid4()
    paid = await captured(payments, merchant, 10_000)
    key = {"Idempotency-Key": "ticket-4711"}
    body = {"amount": {"amount": 3_000, "currency": "CNY"}, "reason": "damaged in transit"}

    first = await payments.http.post(refund_path(paid.id), json=body, headers=ADMIN | key)
    replay = await payments.http.post(refund_path(paid.id), json=body, headers=ADMIN | key)
    assert first.status_code == replay.status_code == 201, first.text
    assert first.content == replay.content  # the first answer, and money moved once
    assert first.json() | {"payment_id": None, "order_id": None} == {
        "payment_id": None, "order_id": None, "status": "PARTIALLY_REFUNDED",
        "amount": {"amount": 10_000, "currency": "CNY"},
        "captured": {"amount": 10_000, "currency": "CNY"},
        "refunded": {"amount": 3_000, "currency": "CNY"},
    }
    rest = await payments.http.post(refund_path(paid.id), json={"reason": "order lost"},
                                     headers=ADMIN | {"Idempotency-Key": "ticket-4712"})
    assert rest.status_code == 201, rest.text
    assert (rest.json()["status"], rest.json()["refunded"]["amount"]) == ("REFUNDED", 10_000)

    totals = await ledger_totals(payments)
    assert (totals[f"merchant_payable:{merchant}"], totals["platform_commission"]) == (0, 0)
    assert totals["refunds"] == 10_000 and await unbalanced_entries(payments) == []
    reasons = await payments.sql("SELECT amount, reason FROM refunds ORDER BY created_at")
    assert [(r["amount"], r["reason"]) for r in reasons] == [
        (3_000, "damaged in transit"), (7_000, "order lost")]
    events = await read_events(payments.nats_url, count=4)
    refunded = [e.message() for e in events if e.subject == "payments.payment.refunded"]
    assert [(m.order_id, m.captured, m.refunded) for m in refunded] == [
        (paid.order_id, 10_000, 3_000), (paid.order_id, 10_000, 10_000)]


async def test_admin_refunds_refuse_what_cannot_be(payments: Running) -> None:
    paid = await captured(payments, uuid.uuid4(), 5_000)
    held = await payments.stub.Authorize(authorize_request(amount=5_000))  # never captured

    async def post(payment_id: str, body: dict, key: str | None = "k1",
                   headers: dict[str, str] = ADMIN) -> tuple[int, str]:
        extra = {"Idempotency-Key": key} if key is not None else {}
        answer = await payments.http.post(refund_path(payment_id), json=body,
                                          headers=headers | extra)
        return answer.status_code, answer.json().get("type", "").rsplit("/", 1)[-1]

    reason = {"reason": "goodwill"}
    assert await post(paid.id, {"amount": 100, **reason}, headers={}) == (401, "unauthorized")
    assert await post(paid.id, {"amount": 100, **reason}, key=None) == (400, "missing-header")
    assert await post(paid.id, {"amount": 100, **reason}, key="") == (422, "validation-error")
    assert await post(paid.id, {"amount": 100}) == (422, "validation-error")  # no reason
    assert await post(paid.id, {"amount": 0, **reason}) == (422, "validation-error")
    assert await post(paid.id, {"amount": 5_001, **reason}) == (422, "validation-error")
    assert await post(held.id, {"amount": 100, **reason}) == (409, "conflict")
    assert await post(str(uuid.uuid4()), {"amount": 100, **reason}) == (404, "not-found")
    assert await post(paid.id, {"amount": 100, **reason}, key="k2") == (201, "")
    # The same key for another amount is a client bug, not a second refund.
    assert await post(paid.id, {"amount": 200, **reason}, key="k2") == (
        422, "idempotency-key-reused")
    assert [r["amount"] for r in await payments.sql("SELECT amount FROM refunds")] == [100]
