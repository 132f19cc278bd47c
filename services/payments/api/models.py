"""Response shapes (the storefront contract: money in minor units, snake_case)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from marketplace.payments.v1 import payments_pb2 as pb
from pydantic import BaseModel, Discriminator, Field, Tag

from services.common import errors
from services.common.inputs import Int64, StrictModel, Text
from services.payments.store import PaymentRow


class Money(BaseModel):
    amount: int
    currency: str


class PaymentOut(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    status: str
    amount: Money
    captured: Money
    refunded: Money
    decline_code: str | None
    created_at: datetime

    @classmethod
    def of(cls, p: PaymentRow) -> PaymentOut:
        def money(amount: int) -> Money:
            return Money(amount=amount, currency=p.currency)

        return cls(
            id=p.id, order_id=p.order_id, status=p.status.value, amount=money(p.amount),
            captured=money(p.captured), refunded=money(p.refunded),
            decline_code=p.decline_code, created_at=p.created_at,
        )


class AdminPaymentOut(PaymentOut):
    member_id: uuid.UUID
    merchant_id: uuid.UUID
    commission: Money

    @classmethod
    def of(cls, p: PaymentRow) -> AdminPaymentOut:
        base = PaymentOut.of(p).model_dump()
        return cls(
            **base, member_id=p.member_id, merchant_id=p.merchant_id,
            commission=Money(amount=p.commission, currency=p.currency),
        )


class PaymentPage(BaseModel):
    items: list[AdminPaymentOut]
    next_cursor: str | None


class MerchantBalance(BaseModel):
    merchant_id: uuid.UUID
    # What the platform owes the merchant: captures net of commission, less refunds.
    balance: Money


class MoneyIn(StrictModel):
    amount: Int64 = Field(description="minor units (fen)")
    currency: Text = Field(max_length=3)


def _amount_kind(value: Any) -> str:
    return "Money" if isinstance(value, dict | MoneyIn) else "fen"


# One branch is validated, chosen by the JSON type, so a mistake answers one error, not two.
RefundAmount = Annotated[
    Annotated[MoneyIn, Tag("Money")] | Annotated[Int64, Tag("fen")], Discriminator(_amount_kind)
]


class RefundRequest(StrictModel):
    """An admin refund: `amount` in fen (Money or a bare integer); omitted, all that remains."""

    amount: RefundAmount | None = None
    reason: Text = Field(min_length=1, max_length=500)

    def fen(self, currency: str) -> int:
        """The amount asked for in fen, 0 for "everything still refundable"."""
        if self.amount is None:
            return 0
        if isinstance(self.amount, MoneyIn):
            if self.amount.currency != currency:
                raise errors.validation_error("amount.currency", f"must be {currency}")
            fen = self.amount.amount
        else:
            fen = self.amount
        if fen <= 0:
            raise errors.validation_error("amount", "must be a positive number of fen")
        return fen


class RefundOut(BaseModel):
    """The payment as the refund left it (a replay answers the same)."""

    payment_id: uuid.UUID
    order_id: uuid.UUID
    status: str
    amount: Money
    captured: Money
    refunded: Money

    @classmethod
    def of(cls, p: pb.Payment) -> RefundOut:
        def money(amount: int) -> Money:
            return Money(amount=amount, currency=p.amount.currency)

        return cls(
            payment_id=uuid.UUID(p.id), order_id=uuid.UUID(p.order_id),
            status=pb.PaymentStatus.Name(p.status).removeprefix("PAYMENT_STATUS_"),
            amount=money(p.amount.amount), captured=money(p.captured),
            refunded=money(p.refunded),
        )
