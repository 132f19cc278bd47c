"""AuthorizeBatch: several sales in one call, each answered as its own Authorize would be,
recorded together; one item's refusal fails no other."""

from __future__ import annotations

import uuid

import grpc
from marketplace.payments.v1 import payments_pb2 as pb

from tests.integration.payments.harness import (
    Running,
    authorize_request,
    ledger_totals,
    unbalanced_entries,
)

S = pb.PaymentStatus


def _sale(**changes: object) -> pb.AuthorizeRequest:
    order = uuid.uuid4()
    return authorize_request(order_id=order, capture_key=f"capture:{order}", **changes)  # type: ignore[arg-type]


async def test_a_batch_gives_each_payment_its_own_answer_and_records_them_together(
    payments: Running,
) -> None:
    merchant = uuid.uuid4()
    earlier = _sale(merchant_id=merchant, amount=1_000)
    first = await payments.stub.Authorize(earlier)
    good = _sale(merchant_id=merchant, amount=2_000)
    declined = _sale(merchant_id=merchant, token="tok_chargeDeclined")
    reused = _sale(merchant_id=merchant, key=earlier.idempotency_key, amount=3_000)
    unkeyed = _sale(merchant_id=merchant, key="")
    statements_before = await payments.sql("SELECT count(*) AS n FROM payments")

    answer = await payments.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(
        requests=[good, declined, earlier, reused, unkeyed]))

    paid, failed, replayed, refused, invalid = answer.results
    assert (paid.payment.status, paid.payment.captured) == (S.PAYMENT_STATUS_CAPTURED, 2_000)
    assert (failed.payment.status, failed.payment.decline_code) == (
        S.PAYMENT_STATUS_FAILED, "card_declined")
    assert replayed.payment == first  # the first answer, no money moved again
    assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == refused.refusal.code
    assert "reused" in refused.refusal.message
    assert invalid.refusal.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert statements_before[0]["n"] == 1
    rows = await payments.sql("SELECT order_id::text, status FROM payments ORDER BY seq")
    assert {(r["order_id"], r["status"]) for r in rows} == {
        (earlier.order_id, "CAPTURED"), (good.order_id, "CAPTURED"),
        (declined.order_id, "FAILED")}
    # The sale's Capture answer is stored under its key: a later Capture replays it.
    again = await payments.stub.Capture(pb.CaptureRequest(
        idempotency_key=good.capture_idempotency_key, payment_id=paid.payment.id))
    assert again == paid.payment
    assert await ledger_totals(payments) == {
        "member_funding": -3_000, "authorized_holds": 0,
        f"merchant_payable:{merchant}": 2_850, "platform_commission": 150,
    }
    assert await unbalanced_entries(payments) == []
    # The batch again: every item replays its first answer.
    assert await payments.stub.AuthorizeBatch(pb.AuthorizeBatchRequest(
        requests=[good, declined, earlier, reused, unkeyed])) == answer
