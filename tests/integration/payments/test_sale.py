"""A sale: Authorize with a capture key authorizes and captures in one call, as checkout does.

It must move money exactly as Authorize then Capture(key) would: the same journal
entries, and a later Capture with that key replays instead of capturing again. It
publishes one `captured` event (the state after its one transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import grpc
from marketplace.payments.v1 import payments_pb2 as pb

from services.payments.processor import ProcessorResult, ProcessorUnavailable, SimulatedProcessor
from tests.infra import FreshDb
from tests.integration.payments.harness import (
    Running,
    authorize_request,
    ledger_totals,
    read_events,
    rpc_error,
    running_payments,
    unbalanced_entries,
)

S = pb.PaymentStatus


async def test_a_sale_authorizes_and_captures_once_with_both_entries_and_one_event(
    payments: Running,
) -> None:
    merchant, order = uuid.uuid4(), uuid.uuid4()
    request = authorize_request(order_id=order, merchant_id=merchant, amount=10_000,
                                capture_key=f"capture:{order}")
    sale = await payments.stub.Authorize(request)
    assert (sale.status, sale.captured, sale.refunded) == (S.PAYMENT_STATUS_CAPTURED, 10_000, 0)

    # The same request again, and a Capture with the sale's capture key: replays, no money.
    assert await payments.stub.Authorize(request) == sale
    again = await payments.stub.Capture(
        pb.CaptureRequest(idempotency_key=f"capture:{order}", payment_id=sale.id))
    assert (again.id, again.status, again.captured) == (sale.id, S.PAYMENT_STATUS_CAPTURED,
                                                        10_000)
    # The same key for a different body is refused, as for any other call.
    other = authorize_request(order_id=order, merchant_id=merchant, amount=9_000,
                              capture_key=f"capture:{order}")
    err = await rpc_error(payments.stub.Authorize(other))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert await ledger_totals(payments) == {
        "member_funding": -10_000, "authorized_holds": 0,
        f"merchant_payable:{merchant}": 9_500, "platform_commission": 500,
    }
    assert await unbalanced_entries(payments) == []
    kinds = [r["kind"] for r in await payments.sql(
        "SELECT kind FROM journal_entries ORDER BY id")]
    assert kinds == ["authorize", "capture"]
    # One event for the one transaction; it says everything (amount, captured, status).
    [event] = await read_events(payments.nats_url, count=1)
    assert event.subject == "payments.payment.captured"
    msg = event.message()
    assert (msg.status, msg.amount.amount, msg.captured) == ("CAPTURED", 10_000, 10_000)
    assert len(await payments.sql("SELECT 1 FROM outbox")) == 1


async def test_a_declined_sale_is_failed_and_captures_nothing(payments: Running) -> None:
    order = uuid.uuid4()
    sale = await payments.stub.Authorize(authorize_request(
        order_id=order, token="tok_chargeDeclined", capture_key=f"capture:{order}"))
    assert (sale.status, sale.captured, sale.decline_code) == (
        S.PAYMENT_STATUS_FAILED, 0, "card_declined")
    assert await payments.sql("SELECT 1 FROM journal_entries") == []


class _CaptureOutage(SimulatedProcessor):
    """Authorizes as usual; the first capture gets no answer, later ones go through."""

    def __init__(self) -> None:
        super().__init__()
        self.captures = 0

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ProcessorResult:
        self.captures += 1
        if self.captures == 1:
            raise ProcessorUnavailable("simulated capture outage")
        return await super().capture(reference, amount, idempotency_key)


async def test_a_sale_the_processor_cannot_capture_stays_authorized_for_a_later_capture(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str
) -> None:
    db = await fresh_db("payments")
    async with running_payments(db, nats_url, processor=_CaptureOutage()) as payments:
        order = uuid.uuid4()
        sale = await payments.stub.Authorize(
            authorize_request(order_id=order, capture_key=f"capture:{order}"))
        assert (sale.status, sale.captured) == (S.PAYMENT_STATUS_AUTHORIZED, 0)
        # The hold is recorded: the capture that checkout's recovery sends goes through once.
        cap = await payments.stub.Capture(
            pb.CaptureRequest(idempotency_key=f"capture:{order}", payment_id=sale.id))
        assert (cap.status, cap.captured) == (S.PAYMENT_STATUS_CAPTURED, 10_000)
        found = await payments.stub.GetPayment(pb.GetPaymentRequest(order_id=str(order)))
        assert found.status == S.PAYMENT_STATUS_CAPTURED
        assert await unbalanced_entries(payments) == []
