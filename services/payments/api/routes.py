"""Payment look-ups: the paying member, admins; merchant balances (admin for now)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from services.common import errors
from services.payments import store
from services.payments.api.deps import Admin, Conn, Context, CurrentMember
from services.payments.api.models import (
    AdminPaymentOut,
    MerchantBalance,
    Money,
    PaymentOut,
    PaymentPage,
)

# Explicit: the app-wide default (ORJSONResponse) is deprecated in FastAPI 0.165.
router = APIRouter(prefix="/v1", default_response_class=JSONResponse)


@router.get("/payments/{payment_id}", response_model=PaymentOut)
async def get_payment(payment_id: uuid.UUID, member: CurrentMember, conn: Conn) -> PaymentOut:
    payment = await store.get(conn, payment_id)
    # Another member's payment is answered exactly like a missing one.
    if payment is None or payment.member_id != member.id:
        raise errors.not_found(f"payment {payment_id}")
    return PaymentOut.of(payment)


@router.get("/admin/payments", response_model=PaymentPage, dependencies=[Admin])
async def list_payments(
    conn: Conn,
    order_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> PaymentPage:
    after_seq = _parse_cursor(cursor)
    rows = await store.list_payments(conn, order_id=order_id, after_seq=after_seq, limit=limit)
    next_cursor = str(rows[-1].seq) if len(rows) == limit else None
    return PaymentPage(items=[AdminPaymentOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/merchants/{merchant_id}/balance", response_model=MerchantBalance, dependencies=[Admin]
)
async def merchant_balance(merchant_id: uuid.UUID, conn: Conn, ctx: Context) -> MerchantBalance:
    balance = await store.merchant_balance(conn, merchant_id=merchant_id, currency=ctx.currency)
    return MerchantBalance(
        merchant_id=merchant_id, balance=Money(amount=balance, currency=ctx.currency)
    )


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise errors.validation_error("cursor", "not a cursor this endpoint returned")
    return int(cursor)
