"""Replays answer the first answer and move money once; concurrent refunds never overshoot."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from grpc import aio
from marketplace.payments.v1 import payments_pb2 as pb
from marketplace.payments.v1 import payments_pb2_grpc

from services.common import grpcutil
from tests.integration.payments.harness import (
    SECRET,
    Running,
    authorize_request,
    ledger_totals,
    rpc_error,
    unbalanced_entries,
)

S = pb.PaymentStatus


async def test_replays_return_the_first_answer_and_move_money_once(payments: Running) -> None:
    stub = payments.stub
    request = authorize_request(amount=8_000)
    first = await stub.Authorize(request)
    assert await stub.Authorize(request) == first

    capture = pb.CaptureRequest(idempotency_key="cap", payment_id=first.id)
    captured = await stub.Capture(capture)
    refund = pb.RefundRequest(idempotency_key="ref", payment_id=first.id, amount=1_000)
    refunded = await stub.Refund(refund)
    assert await stub.Capture(capture) == captured  # the answer as it was then
    assert await stub.Refund(refund) == refunded
    assert refunded.refunded == 1_000

    kinds = await payments.sql("SELECT kind, count(*) AS n FROM journal_entries GROUP BY kind")
    assert {r["kind"]: r["n"] for r in kinds} == {"authorize": 1, "capture": 1, "refund": 1}
    assert (await ledger_totals(payments))["refunds"] == 1_000
    events = await payments.sql("SELECT subject FROM outbox ORDER BY seq")
    assert [e["subject"] for e in events] == [
        "payments.payment.authorized", "payments.payment.captured", "payments.payment.refunded",
    ]


async def test_one_payment_per_order_whatever_the_key(payments: Running) -> None:
    request = authorize_request()
    first = await payments.stub.Authorize(request)
    again = pb.AuthorizeRequest()
    again.CopyFrom(request)
    again.idempotency_key = "another-key"
    assert (await payments.stub.Authorize(again)).id == first.id

    again.amount.amount += 1
    err = await rpc_error(payments.stub.Authorize(again))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(await payments.sql("SELECT id FROM payments")) == 1


async def test_the_same_key_with_a_different_request_is_refused(payments: Running) -> None:
    request = authorize_request(key="k-1", amount=5_000)
    paid = await payments.stub.Authorize(request)
    err = await rpc_error(payments.stub.Authorize(authorize_request(key="k-1", amount=5_001)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "idempotency key reused with a different request"

    await payments.stub.Capture(pb.CaptureRequest(idempotency_key="c", payment_id=paid.id))
    await payments.stub.Refund(pb.RefundRequest(idempotency_key="r", payment_id=paid.id, amount=1))
    err = await rpc_error(payments.stub.Refund(
        pb.RefundRequest(idempotency_key="r", payment_id=paid.id, amount=2)
    ))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await payments.stub.GetPayment(pb.GetPaymentRequest(payment_id=paid.id))).refunded == 1


async def test_fifty_parallel_refunds_never_exceed_the_captured_amount(payments: Running) -> None:
    paid = await payments.stub.Authorize(authorize_request(amount=30))
    await payments.stub.Capture(pb.CaptureRequest(idempotency_key="c", payment_id=paid.id))

    async def refund_one(i: int) -> grpc.StatusCode:
        try:
            await payments.stub.Refund(pb.RefundRequest(
                idempotency_key=f"refund-{i}", payment_id=paid.id, amount=1
            ), timeout=30)
        except aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(refund_one(i) for i in range(50)))
    assert codes.count(grpc.StatusCode.OK) == 30
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION}
    final = await payments.stub.GetPayment(pb.GetPaymentRequest(payment_id=paid.id))
    assert (final.status, final.refunded) == (S.PAYMENT_STATUS_REFUNDED, 30)
    assert (await ledger_totals(payments))["refunds"] == 30
    assert len(await payments.sql("SELECT id FROM refunds")) == 30
    assert await unbalanced_entries(payments) == []


async def test_a_call_without_service_identity_is_unauthenticated(payments: Running) -> None:
    async with aio.insecure_channel(payments.grpc_target) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        err = await rpc_error(stub.GetPayment(
            pb.GetPaymentRequest(payment_id=str(uuid.uuid4())), timeout=5
        ))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_call_without_deadline_is_an_invalid_argument(payments: Running) -> None:
    identity = (
        (grpcutil.IDENTITY_HEADER, "orders"),
        (grpcutil.TOKEN_HEADER, grpcutil.service_token(SECRET, "orders")),
    )
    async with aio.insecure_channel(payments.grpc_target) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        err = await rpc_error(stub.Authorize(authorize_request(), metadata=identity))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "deadline" in (err.details() or "")
    assert await payments.sql("SELECT id FROM payments") == []
