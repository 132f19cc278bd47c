"""Response shapes (the storefront contract: money in minor units, snake_case)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

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
