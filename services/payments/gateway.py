"""The one way to the card processor: a deadline on every call and a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from services.payments.breaker import BreakerState, CircuitBreaker, Permit
from services.payments.metrics import BREAKER_OPEN, FAILURE_RATIO, PROCESSOR_CALLS
from services.payments.processor import CardProcessor, ProcessorResult, ProcessorUnavailable

log = logging.getLogger(__name__)


class ProcessorGateway:
    """Raises `ProcessorUnavailable` when the breaker is open or the processor is slow or down.

    The outcome of an unanswered call is unknown, so callers store nothing and the client
    retries with the same idempotency key (the processor is idempotent on it).
    """

    def __init__(
        self, processor: CardProcessor, breaker: CircuitBreaker, *, timeout_s: float
    ) -> None:
        self.processor, self.breaker, self.timeout_s = processor, breaker, timeout_s

    # The idempotency key names the request to the breaker: a retry of it is the same
    # request, so its repeated timeouts count once (see breaker.py).

    async def authorize(self, *, token: str, amount: int, idempotency_key: str) -> ProcessorResult:
        return await self._call(
            "authorize", idempotency_key,
            lambda: self.processor.authorize(token, amount, idempotency_key),
        )

    async def capture(
        self, *, reference: str, amount: int, idempotency_key: str
    ) -> ProcessorResult:
        return await self._call(
            "capture", idempotency_key,
            lambda: self.processor.capture(reference, amount, idempotency_key),
        )

    async def void(self, *, reference: str, idempotency_key: str) -> ProcessorResult:
        return await self._call(
            "void", idempotency_key, lambda: self.processor.void(reference, idempotency_key)
        )

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> ProcessorResult:
        return await self._call(
            "refund", idempotency_key,
            lambda: self.processor.refund(reference, amount, idempotency_key),
        )

    async def _call(
        self, operation: str, subject: str, call: Callable[[], Awaitable[ProcessorResult]]
    ) -> ProcessorResult:
        permit = self.breaker.allow(f"{operation}:{subject}")
        if permit is None:
            PROCESSOR_CALLS.labels(operation, "rejected").inc()
            raise ProcessorUnavailable(
                "card processor circuit breaker is open after repeated failures; "
                f"retry with the same idempotency key in {self.breaker.retry_after_s():.1f}s"
            )
        try:
            result = await asyncio.wait_for(call(), timeout=self.timeout_s)
        except TimeoutError as exc:
            self._failed(operation, permit, "timeout")
            raise ProcessorUnavailable(
                f"card processor did not answer within {self.timeout_s * 1000:.0f} ms; "
                "retry with the same idempotency key"
            ) from exc
        except ProcessorUnavailable:
            self._failed(operation, permit, "unavailable")
            raise
        except BaseException:
            # Cancelled by our own caller (e.g. its deadline): says nothing about the processor.
            self.breaker.abandon(permit)
            raise
        self.breaker.record_success(permit)
        self._publish()
        PROCESSOR_CALLS.labels(operation, "approved" if result.approved else "declined").inc()
        return result

    def _failed(self, operation: str, permit: Permit, outcome: str) -> None:
        was = self.breaker.state
        self.breaker.record_failure(permit)
        PROCESSOR_CALLS.labels(operation, outcome).inc()
        if self.breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN:
            log.warning("processor breaker open",
                        extra={"operation": operation, **self.breaker.snapshot()})
        self._publish()

    def _publish(self) -> None:
        snapshot = self.breaker.snapshot()
        BREAKER_OPEN.set(0 if snapshot["state"] == BreakerState.CLOSED else 1)
        FAILURE_RATIO.set(snapshot["failure_rate"])
