"""A slow processor trips the breaker: Authorize answers UNAVAILABLE and stores nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from marketplace.payments.v1 import payments_pb2 as pb

from services.payments.breaker import BreakerState
from tests.helpers import eventually
from tests.infra import FreshDb
from tests.integration.payments.harness import authorize_request, rpc_error, running_payments


async def test_the_breaker_opens_on_timeouts_and_closes_after_a_good_trial(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str
) -> None:
    db = await fresh_db("payments")
    async with running_payments(
        db, nats_url, processor_timeout_ms=100, breaker_minimum_calls=2, breaker_reset_s=1.0,
    ) as payments:
        slow = authorize_request(key="slow-1", token="tok_slow")
        err = await rpc_error(payments.stub.Authorize(slow))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        # The channel sent it three times (its retry policy); the same request failing
        # again is not news, so one failure: not yet enough to judge.
        assert "did not answer" in (err.details() or "")
        assert payments.breaker.state is BreakerState.CLOSED
        # A second request timing out makes two of two: open (its own retry is refused).
        err = await rpc_error(payments.stub.Authorize(authorize_request(token="tok_slow")))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert payments.breaker.state is BreakerState.OPEN

        # Open: refused at once, without asking the processor.
        err = await rpc_error(payments.stub.Authorize(authorize_request(token="tok_visa")))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker is open" in (err.details() or "")
        # Nothing half-written: no payment, no key, no ledger line, no event.
        for table in ("payments", "idempotency_keys", "journal_lines", "outbox"):
            assert await payments.sql(f"SELECT 1 FROM {table}") == [], table

        async def state() -> BreakerState:
            return payments.breaker.state

        await eventually(state, until=lambda s: s is BreakerState.HALF_OPEN, what="half-open")
        # The caller retries with the same key (now with a card that answers): it goes through.
        retry = pb.AuthorizeRequest()
        retry.CopyFrom(slow)
        retry.payment_token = "tok_visa"
        paid = await payments.stub.Authorize(retry)
        assert paid.status == pb.PaymentStatus.PAYMENT_STATUS_AUTHORIZED
        assert payments.breaker.state is BreakerState.CLOSED
