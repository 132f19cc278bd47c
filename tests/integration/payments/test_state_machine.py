"""Over real gRPC: partial capture and several partial refunds keep the ledger balanced at
every step, and every impossible move is FAILED_PRECONDITION with a message that says why."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from marketplace.payments.v1 import payments_pb2 as pb

from tests.integration.payments.harness import (
    Running,
    authorize_request,
    ledger_totals,
    rpc_error,
    unbalanced_entries,
)

S = pb.PaymentStatus


async def assert_books_match(payments: Running, p: pb.Payment, merchant: uuid.UUID) -> None:
    """Balanced entries; the merchant and the platform hold exactly what was kept."""
    assert await unbalanced_entries(payments) == []
    totals = await ledger_totals(payments)
    assert sum(totals.values()) == 0
    [row] = await payments.sql("SELECT commission FROM payments WHERE id = $1", uuid.UUID(p.id))
    commission_back = row["commission"] * p.refunded // p.captured if p.captured else 0
    assert totals.get(f"merchant_payable:{merchant}", 0) == (
        p.captured - row["commission"] - (p.refunded - commission_back))
    assert totals.get("platform_commission", 0) == row["commission"] - commission_back
    assert totals.get("refunds", 0) == p.refunded
    held = p.amount.amount if p.status == S.PAYMENT_STATUS_AUTHORIZED else p.captured
    assert totals["member_funding"] == -held


async def test_partial_capture_then_partial_refunds_balance_after_every_step(
    payments: Running,
) -> None:
    merchant = uuid.uuid4()
    stub = payments.stub
    p = await stub.Authorize(authorize_request(merchant_id=merchant, amount=10_000))
    await assert_books_match(payments, p, merchant)
    p = await stub.Capture(pb.CaptureRequest(idempotency_key="cap", payment_id=p.id,
                                             amount=7_001))
    assert (p.status, p.captured) == (S.PAYMENT_STATUS_CAPTURED, 7_001)
    await assert_books_match(payments, p, merchant)  # commission 350, 3 000 released
    for i, amount in enumerate((1_000, 2_345, 3_333)):
        p = await stub.Refund(pb.RefundRequest(idempotency_key=f"r{i}", payment_id=p.id,
                                               amount=amount))
        assert p.status == S.PAYMENT_STATUS_PARTIALLY_REFUNDED
        await assert_books_match(payments, p, merchant)
    assert p.refunded == 6_678
    err = await rpc_error(stub.Refund(pb.RefundRequest(idempotency_key="r-over",
                                                       payment_id=p.id, amount=324)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only 323 fen of 7001 remain refundable" in (err.details() or "")
    p = await stub.Refund(pb.RefundRequest(idempotency_key="r-last", payment_id=p.id,
                                           amount=323))
    assert (p.status, p.refunded) == (S.PAYMENT_STATUS_REFUNDED, 7_001)
    await assert_books_match(payments, p, merchant)
    totals = await ledger_totals(payments)
    assert (totals[f"merchant_payable:{merchant}"], totals["platform_commission"]) == (0, 0)


Make = Callable[[Running], Awaitable[pb.Payment]]


async def _authorized(run: Running) -> pb.Payment:
    return await run.stub.Authorize(authorize_request(amount=10_000))


async def _captured(run: Running) -> pb.Payment:
    p = await _authorized(run)
    return await run.stub.Capture(pb.CaptureRequest(idempotency_key=f"c-{p.id}", payment_id=p.id,
                                                    amount=6_000))


async def _partially_refunded(run: Running) -> pb.Payment:
    p = await _captured(run)
    return await run.stub.Refund(pb.RefundRequest(idempotency_key=f"r-{p.id}", payment_id=p.id,
                                                  amount=1_000))


async def _refunded(run: Running) -> pb.Payment:
    p = await _captured(run)
    return await run.stub.Refund(pb.RefundRequest(idempotency_key=f"r-{p.id}", payment_id=p.id))


async def _voided(run: Running) -> pb.Payment:
    p = await _authorized(run)
    return await run.stub.Void(pb.VoidRequest(idempotency_key=f"v-{p.id}", payment_id=p.id))


async def _failed(run: Running) -> pb.Payment:
    return await run.stub.Authorize(authorize_request(token="tok_chargeDeclined"))


STATES: dict[str, Make] = {
    "AUTHORIZED": _authorized, "CAPTURED": _captured, "PARTIALLY_REFUNDED": _partially_refunded,
    "REFUNDED": _refunded, "VOIDED": _voided, "FAILED": _failed,
}
# Every move the state machine forbids: (state, move) -> the verb the message names.
IMPOSSIBLE = {
    ("AUTHORIZED", "refund"): "refunded",
    ("CAPTURED", "capture"): "captured", ("CAPTURED", "void"): "voided",
    ("PARTIALLY_REFUNDED", "capture"): "captured", ("PARTIALLY_REFUNDED", "void"): "voided",
    ("REFUNDED", "capture"): "captured", ("REFUNDED", "void"): "voided",
    ("REFUNDED", "refund"): "refunded",
    ("VOIDED", "capture"): "captured", ("VOIDED", "void"): "voided",
    ("VOIDED", "refund"): "refunded",
    ("FAILED", "capture"): "captured", ("FAILED", "void"): "voided",
    ("FAILED", "refund"): "refunded",
}


def _call(run: Running, move: str, payment_id: str) -> Any:
    key = f"{move}-again-{payment_id}"
    if move == "capture":
        return run.stub.Capture(pb.CaptureRequest(idempotency_key=key, payment_id=payment_id))
    if move == "void":
        return run.stub.Void(pb.VoidRequest(idempotency_key=key, payment_id=payment_id))
    return run.stub.Refund(pb.RefundRequest(idempotency_key=key, payment_id=payment_id,
                                            amount=1))


async def test_every_impossible_move_is_failed_precondition_and_changes_nothing(
    payments: Running,
) -> None:
    wrong: list[str] = []
    for (state, move), verb in IMPOSSIBLE.items():
        p = await STATES[state](payments)
        assert S.Name(p.status) == f"PAYMENT_STATUS_{state}"
        entries = len(await payments.sql("SELECT id FROM journal_entries"))
        err = await rpc_error(_call(payments, move, p.id))
        expected = f"a {state} payment cannot be {verb}"
        if (err.code(), err.details()) != (grpc.StatusCode.FAILED_PRECONDITION, expected):
            wrong.append(f"{move} of {state}: {err.code()} {err.details()!r}")
        after = await payments.stub.GetPayment(pb.GetPaymentRequest(payment_id=p.id))
        if after != p or len(await payments.sql("SELECT id FROM journal_entries")) != entries:
            wrong.append(f"{move} of {state} changed the payment or the journal")
    assert wrong == []
