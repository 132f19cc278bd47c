"""The one way to the card processor: a deadline on every call and a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge

from services.payments.breaker import BreakerState, CircuitBreaker
from services.payments.processor import CardProcessor, ProcessorResult, ProcessorUnavailable

log = logging.getLogger(__name__)

BREAKER_OPEN = Gauge("payments_processor_breaker_open", "1 while the processor breaker is open")
PROCESSOR_CALLS = Counter(
    "payments_processor_calls_total", "Card processor calls by operation and outcome",
    ["operation", "outcome"],
)


class ProcessorGateway:
    """Raises `ProcessorUnavailable` when the breaker is open or the processor is slow or down.

    The outcome of an unanswered call is unknown, so callers store nothing and the client
    retries with the same idempotency key (the processor is idempotent on it).
    """

    def __init__(
        self, processor: CardProcessor, breaker: CircuitBreaker, *, timeout_s: float
    ) -> None:
        self.processor, self.breaker, self.timeout_s = processor, breaker, timeout_s

    async def authorize(self, *, token: str, amount: int, idempotency_key: str) -> ProcessorResult:
        return await self._call(
            "authorize", lambda: self.processor.authorize(token, amount, idempotency_key)
        )

    async def capture(
        self, *, reference: str, amount: int, idempotency_key: str
    ) -> ProcessorResult:
        return await self._call(
            "capture", lambda: self.processor.capture(reference, amount, idempotency_key)
        )

    async def void(self, *, reference: str, idempotency_key: str) -> ProcessorResult:
        return await self._call("void", lambda: self.processor.void(reference, idempotency_key))

    async def refund(self, *, reference: str, amount: int, idempotency_key: str) -> ProcessorResult:
        return await self._call(
            "refund", lambda: self.processor.refund(reference, amount, idempotency_key)
        )

    async def _call(
        self, operation: str, call: Callable[[], Awaitable[ProcessorResult]]
    ) -> ProcessorResult:
        if not self.breaker.allow():
            PROCESSOR_CALLS.labels(operation, "rejected").inc()
            raise ProcessorUnavailable(
                "card processor circuit breaker is open after repeated failures; "
                f"retry with the same idempotency key in {self.breaker.retry_after_s():.1f}s"
            )
        try:
            result = await asyncio.wait_for(call(), timeout=self.timeout_s)
        except TimeoutError as exc:
            self._failed(operation, "timeout")
            raise ProcessorUnavailable(
                f"card processor did not answer within {self.timeout_s * 1000:.0f} ms; "
                "retry with the same idempotency key"
            ) from exc
        except ProcessorUnavailable:
            self._failed(operation, "unavailable")
            raise
        except BaseException:
            # Cancelled by our own caller (e.g. its deadline): says nothing about the processor.
            self.breaker.abandon()
            raise
        self.breaker.record_success()
        BREAKER_OPEN.set(0)
        PROCESSOR_CALLS.labels(operation, "approved" if result.approved else "declined").inc()
        return result

    def _failed(self, operation: str, outcome: str) -> None:
        self.breaker.record_failure()
        PROCESSOR_CALLS.labels(operation, outcome).inc()
        if self.breaker.state is BreakerState.OPEN:
            BREAKER_OPEN.set(1)
            log.warning(
                "processor breaker open",
                extra={"failures": self.breaker.consecutive_failures, "operation": operation},
            )
