"""The payment state machine: authorize, capture, void and refund as pure state changes."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

RuleCode = Literal["failed_precondition", "invalid_argument"]


class PaymentStatus(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"
    FAILED = "FAILED"


REFUNDABLE_STATUSES = frozenset({PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED})


class PaymentRuleError(Exception):
    """A move the payment rules forbid; `code` maps onto the gRPC status code."""

    def __init__(self, code: RuleCode, message: str) -> None:
        super().__init__(message)
        self.code: RuleCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PaymentState:
    """A payment's status and amounts in fen; `amount` is what was authorized."""

    status: PaymentStatus
    amount: int
    captured: int = 0
    refunded: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.refunded <= self.captured <= self.amount:
            raise ValueError(f"need 0 ≤ refunded ≤ captured ≤ amount, got {self}")

    @property
    def refundable(self) -> int:
        return self.captured - self.refunded


def authorized(amount: int) -> PaymentState:
    """A new payment whose card authorization was approved for `amount` fen."""
    if amount <= 0:
        raise PaymentRuleError("invalid_argument", f"amount must be > 0 fen, got {amount}")
    return PaymentState(PaymentStatus.AUTHORIZED, amount)


def failed(amount: int) -> PaymentState:
    """A new payment whose card authorization was declined."""
    return PaymentState(PaymentStatus.FAILED, max(amount, 0))


def capture(p: PaymentState, amount: int = 0) -> PaymentState:
    """Take `amount` fen (0 = all) of the authorization; the rest is released."""
    _require_non_negative(amount)
    _require_status(p, {PaymentStatus.AUTHORIZED}, "captured")
    take = amount or p.amount
    if take > p.amount:
        raise PaymentRuleError(
            "invalid_argument", f"cannot capture {take} fen: only {p.amount} fen authorized"
        )
    return replace(p, status=PaymentStatus.CAPTURED, captured=take)


def void(p: PaymentState) -> PaymentState:
    """Release an authorization that was never captured."""
    _require_status(p, {PaymentStatus.AUTHORIZED}, "voided")
    return replace(p, status=PaymentStatus.VOIDED)


def refund(p: PaymentState, amount: int = 0) -> PaymentState:
    """Return `amount` fen (0 = all that remains) of the captured money."""
    _require_non_negative(amount)
    _require_status(p, REFUNDABLE_STATUSES, "refunded")
    give = amount or p.refundable
    if give > p.refundable:
        raise PaymentRuleError(
            "invalid_argument",
            f"cannot refund {give} fen: only {p.refundable} fen of {p.captured} remain refundable",
        )
    refunded = p.refunded + give
    status = PaymentStatus.REFUNDED if refunded == p.captured else PaymentStatus.PARTIALLY_REFUNDED
    return replace(p, status=status, refunded=refunded)


def _require_non_negative(amount: int) -> None:
    if amount < 0:
        raise PaymentRuleError("invalid_argument", f"amount must be ≥ 0 fen, got {amount}")


def _require_status(p: PaymentState, allowed: Container[PaymentStatus], verb: str) -> None:
    if p.status not in allowed:
        raise PaymentRuleError("failed_precondition", f"a {p.status} payment cannot be {verb}")
