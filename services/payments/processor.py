"""The simulated card processor: deterministic answers by card token, for dev and load tests."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

Sleep = Callable[[float], Awaitable[object]]

SLOW_TOKEN = "tok_slow"
SLOW_TOKEN_DELAY_S = 3.0
UNKNOWN_TOKEN_DECLINE = "invalid_token"
INVALID_AMOUNT_DECLINE = "invalid_amount"

# Card token -> decline code; None approves.
TEST_TOKENS: Mapping[str, str | None] = MappingProxyType(
    {
        "tok_visa": None,
        "tok_mastercard": None,
        SLOW_TOKEN: None,
        "tok_chargeDeclined": "card_declined",
        "tok_insufficientFunds": "insufficient_funds",
        "tok_expiredCard": "expired_card",
    }
)


@dataclass(frozen=True, slots=True)
class ProcessorResult:
    approved: bool
    decline_code: str | None
    reference: str


class ProcessorUnavailable(Exception):
    """No answer from the processor: the outcome is unknown, so retry with the same key."""


class CardProcessor(Protocol):
    """A card processor; every call is idempotent on `idempotency_key`."""

    async def authorize(self, token: str, amount: int, idempotency_key: str) -> ProcessorResult: ...

    async def capture(
        self, reference: str, amount: int, idempotency_key: str
    ) -> ProcessorResult: ...

    async def void(self, reference: str, idempotency_key: str) -> ProcessorResult: ...

    async def refund(
        self, reference: str, amount: int, idempotency_key: str
    ) -> ProcessorResult: ...


class SimulatedProcessor:
    """Answers by token; `latency_s` and `failure_rate` shape it for load tests."""

    def __init__(
        self,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must be ≥ 0, got {latency_s}")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within 0..1, got {failure_rate}")
        self._latency_s = latency_s
        self._failure_rate = failure_rate
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep

    async def authorize(self, token: str, amount: int, idempotency_key: str) -> ProcessorResult:
        await self._respond(SLOW_TOKEN_DELAY_S if token == SLOW_TOKEN else 0.0)
        decline = (
            INVALID_AMOUNT_DECLINE if amount <= 0 else TEST_TOKENS.get(token, UNKNOWN_TOKEN_DECLINE)
        )
        return ProcessorResult(decline is None, decline, _reference("auth", idempotency_key))

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> ProcessorResult:
        await self._respond()
        return _answer(amount, "cap", idempotency_key)

    async def void(self, reference: str, idempotency_key: str) -> ProcessorResult:
        await self._respond()
        return ProcessorResult(True, None, _reference("void", idempotency_key))

    async def refund(self, reference: str, amount: int, idempotency_key: str) -> ProcessorResult:
        await self._respond()
        return _answer(amount, "ref", idempotency_key)

    async def _respond(self, extra_delay_s: float = 0.0) -> None:
        delay = self._latency_s + extra_delay_s
        if delay > 0:
            await self._sleep(delay)
        # Only draw from the rng when failures are on, so seeded runs stay reproducible.
        if self._failure_rate and self._rng.random() < self._failure_rate:
            raise ProcessorUnavailable("simulated processor outage")


def _answer(amount: int, kind: str, idempotency_key: str) -> ProcessorResult:
    decline = INVALID_AMOUNT_DECLINE if amount <= 0 else None
    return ProcessorResult(decline is None, decline, _reference(kind, idempotency_key))


def _reference(kind: str, idempotency_key: str) -> str:
    """The same key always yields the same reference, as a real processor's replay would."""
    digest = hashlib.sha256(f"{kind}:{idempotency_key}".encode()).hexdigest()
    return f"sim_{kind}_{digest[:24]}"
