"""Authorize → capture → refund over real gRPC, with the ledger and the events it leaves."""

from __future__ import annotations

import uuid

import grpc
import pytest
from marketplace.payments.v1 import payments_pb2 as pb

from tests.integration.payments.harness import (
    ADMIN_KEY,
    Running,
    authorize_request,
    ledger_totals,
    read_events,
    rpc_error,
    unbalanced_entries,
)

S = pb.PaymentStatus


async def test_authorize_capture_refund_moves_money_through_a_balanced_ledger(
    payments: Running,
) -> None:
    merchant = uuid.uuid4()
    stub = payments.stub
    auth = await stub.Authorize(authorize_request(merchant_id=merchant, amount=10_000))
    assert (auth.status, auth.amount.amount, auth.amount.currency) == (
        S.PAYMENT_STATUS_AUTHORIZED, 10_000, "CNY")

    cap = await stub.Capture(pb.CaptureRequest(idempotency_key="cap-1", payment_id=auth.id))
    assert (cap.status, cap.captured) == (S.PAYMENT_STATUS_CAPTURED, 10_000)

    ref = await stub.Refund(
        pb.RefundRequest(idempotency_key="ref-1", payment_id=auth.id, amount=2_500)
    )
    assert (ref.status, ref.captured, ref.refunded) == (
        S.PAYMENT_STATUS_PARTIALLY_REFUNDED, 10_000, 2_500)

    # 5% commission = 500 taken at capture; the refund returns 2500/10000 of it = 125.
    assert await ledger_totals(payments) == {
        "member_funding": -10_000,
        "authorized_holds": 0,
        f"merchant_payable:{merchant}": 9_500 - 2_375,
        "platform_commission": 500 - 125,
        "refunds": 2_500,
    }
    assert sum((await ledger_totals(payments)).values()) == 0
    assert await unbalanced_entries(payments) == []

    balance = await payments.http.get(
        f"/v1/merchants/{merchant}/balance", headers={"X-Admin-Key": ADMIN_KEY}
    )
    assert balance.status_code == 200
    assert balance.json() == {
        "merchant_id": str(merchant), "balance": {"amount": 7_125, "currency": "CNY"},
    }

    events = await read_events(payments.nats_url, count=3)
    assert [e.subject for e in events] == [
        "payments.payment.authorized", "payments.payment.captured", "payments.payment.refunded",
    ]
    last = events[-1].message()
    assert (last.payment_id, last.order_id, last.status) == (
        auth.id, auth.order_id, "PARTIALLY_REFUNDED")
    assert (last.amount.amount, last.captured, last.refunded) == (10_000, 10_000, 2_500)
    assert {e.headers["ce-source"] for e in events} == {"/marketplace/payments"}


async def test_a_full_refund_returns_commission_and_merchant_share_exactly(
    payments: Running,
) -> None:
    merchant = uuid.uuid4()
    auth = await payments.stub.Authorize(authorize_request(merchant_id=merchant, amount=999))
    await payments.stub.Capture(pb.CaptureRequest(idempotency_key="c", payment_id=auth.id))
    for i, amount in enumerate((333, 333, 0)):  # 0 refunds whatever remains
        last = await payments.stub.Refund(
            pb.RefundRequest(idempotency_key=f"r{i}", payment_id=auth.id, amount=amount)
        )
    assert (last.status, last.refunded) == (S.PAYMENT_STATUS_REFUNDED, 999)
    totals = await ledger_totals(payments)
    assert totals[f"merchant_payable:{merchant}"] == 0
    assert totals["platform_commission"] == 0
    assert totals["refunds"] == 999
    assert await unbalanced_entries(payments) == []


async def test_a_partial_capture_releases_the_rest_of_the_hold(payments: Running) -> None:
    auth = await payments.stub.Authorize(authorize_request(amount=10_000))
    cap = await payments.stub.Capture(
        pb.CaptureRequest(idempotency_key="c", payment_id=auth.id, amount=6_000)
    )
    assert (cap.status, cap.captured) == (S.PAYMENT_STATUS_CAPTURED, 6_000)
    totals = await ledger_totals(payments)
    assert (totals["member_funding"], totals["authorized_holds"]) == (-6_000, 0)

    err = await rpc_error(payments.stub.Refund(
        pb.RefundRequest(idempotency_key="r", payment_id=auth.id, amount=6_001)
    ))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_void_releases_the_hold_and_nothing_can_be_captured_after(
    payments: Running,
) -> None:
    auth = await payments.stub.Authorize(authorize_request(amount=5_000))
    voided = await payments.stub.Void(pb.VoidRequest(idempotency_key="v", payment_id=auth.id))
    assert voided.status == S.PAYMENT_STATUS_VOIDED
    assert await ledger_totals(payments) == {"member_funding": 0, "authorized_holds": 0}

    err = await rpc_error(
        payments.stub.Capture(pb.CaptureRequest(idempotency_key="c", payment_id=auth.id))
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "VOIDED" in (err.details() or "")
    events = await read_events(payments.nats_url, count=2)
    assert [e.subject for e in events] == [
        "payments.payment.authorized", "payments.payment.voided"]


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [("tok_chargeDeclined", "card_declined"), ("tok_insufficientFunds", "insufficient_funds")],
)
async def test_a_declined_card_is_a_failed_payment_not_an_error(
    payments: Running, token: str, decline_code: str
) -> None:
    declined = await payments.stub.Authorize(authorize_request(token=token))
    assert (declined.status, declined.decline_code) == (S.PAYMENT_STATUS_FAILED, decline_code)
    assert await payments.sql("SELECT * FROM journal_lines") == []  # no money moved

    err = await rpc_error(
        payments.stub.Capture(pb.CaptureRequest(idempotency_key="c", payment_id=declined.id))
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    [event] = await read_events(payments.nats_url, count=1)
    assert event.subject == "payments.payment.failed"
    assert event.message().decline_code == decline_code


async def test_get_payment_by_id_and_by_order(payments: Running) -> None:
    auth = await payments.stub.Authorize(authorize_request())
    by_id = await payments.stub.GetPayment(pb.GetPaymentRequest(payment_id=auth.id))
    by_order = await payments.stub.GetPayment(pb.GetPaymentRequest(order_id=auth.order_id))
    assert by_id == by_order == auth

    unknown = pb.GetPaymentRequest(order_id=str(uuid.uuid4()))
    err = await rpc_error(payments.stub.GetPayment(unknown))
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (authorize_request(amount=0), grpc.StatusCode.INVALID_ARGUMENT),
        (authorize_request(key=""), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AuthorizeRequest(idempotency_key="k", order_id="not-a-uuid"),
         grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["zero-amount", "no-key", "bad-order-id"],
)
async def test_bad_authorize_requests_are_invalid_arguments(
    payments: Running, request_: pb.AuthorizeRequest, code: grpc.StatusCode
) -> None:
    err = await rpc_error(payments.stub.Authorize(request_))
    assert err.code() == code
    assert await payments.sql("SELECT id FROM payments") == []


async def test_unknown_payments_are_not_found_and_bad_amounts_invalid(payments: Running) -> None:
    err = await rpc_error(payments.stub.Capture(
        pb.CaptureRequest(idempotency_key="c", payment_id=str(uuid.uuid4()))
    ))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    auth = await payments.stub.Authorize(authorize_request(amount=1_000))
    err = await rpc_error(payments.stub.Capture(
        pb.CaptureRequest(idempotency_key="c", payment_id=auth.id, amount=1_001)
    ))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await rpc_error(payments.stub.Refund(
        pb.RefundRequest(idempotency_key="r", payment_id=auth.id, amount=1)
    ))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # nothing captured yet
