"""Payment look-ups: the paying member, admins; a merchant's balance for itself or admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from services.common import errors
from services.common.inputs import QueryInt64, Text, parse_int64
from services.payments import store
from services.payments.api.deps import Admin, Conn, Context, CurrentMember, MerchantOrAdmin
from services.payments.api.models import (
    AdminPaymentOut,
    MerchantBalance,
    Money,
    PaymentOut,
    PaymentPage,
)

# Explicit: the app-wide default (ORJSONResponse) is deprecated in FastAPI 0.165.
router = APIRouter(prefix="/v1", default_response_class=JSONResponse)


@router.get("/payments/{payment_id}", response_model=PaymentOut, responses=errors.problems(404),
            tags=["payments"], summary="One of the member's payments",
            operation_id="getPayment")
async def get_payment(payment_id: uuid.UUID, member: CurrentMember, conn: Conn) -> PaymentOut:
    payment = await store.get(conn, payment_id)
    # Another member's payment is answered exactly like a missing one.
    if payment is None or payment.member_id != member.id:
        raise errors.not_found(f"payment {payment_id}")
    return PaymentOut.of(payment)


@router.get("/admin/payments", response_model=PaymentPage, dependencies=[Admin],
            tags=["admin"], summary="Payments, newest first (admin)", operation_id="listPayments")
async def list_payments(
    conn: Conn,
    order_id: uuid.UUID | None = None,
    merchant_id: uuid.UUID | None = None,
    limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 50,
    cursor: Annotated[Text | None, Query(max_length=32)] = None,
) -> PaymentPage:
    """Newest first; filter by `order_id` and/or `merchant_id`; `next_cursor` continues."""
    rows = await store.list_payments(
        conn, order_id=order_id, merchant_id=merchant_id, after_seq=_parse_cursor(cursor),
        limit=limit,
    )
    next_cursor = str(rows[-1].seq) if len(rows) == limit else None
    return PaymentPage(items=[AdminPaymentOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/merchants/{merchant_id}/balance", response_model=MerchantBalance,
    responses=errors.problems(404), tags=["merchants"],
    summary="What the platform owes a merchant", operation_id="getMerchantBalance",
)
async def merchant_balance(
    merchant_id: uuid.UUID, caller: MerchantOrAdmin, conn: Conn, ctx: Context
) -> MerchantBalance:
    """What the platform owes the merchant; a merchant sees only its own (others 404).

    A merchant payments does not know answers 404: one that orders has never announced
    (`orders.merchant.created`) and that no payment names. A known merchant with no sales
    yet has a balance of 0.
    """
    if not caller.may_read(merchant_id):
        raise errors.not_found(f"merchant {merchant_id}")
    balance = await store.merchant_balance(conn, merchant_id=merchant_id, currency=ctx.currency)
    if balance is None:
        raise errors.not_found(f"merchant {merchant_id}")
    return MerchantBalance(
        merchant_id=merchant_id, balance=Money(amount=balance, currency=ctx.currency)
    )


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    seq = parse_int64(cursor)
    if seq is None:  # "²" is a digit to str.isdigit, and bigint stops at 64 bits
        raise errors.validation_error("cursor", "not a cursor this endpoint returned")
    return seq
