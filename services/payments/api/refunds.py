"""Admin refunds over REST: the same idempotent refund the gRPC API makes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.common import errors, idempotency
from services.payments import service
from services.payments.api.deps import Admin, Context
from services.payments.api.models import RefundOut, RefundRequest
from services.payments.commands import KEY_REUSED, MAX_KEY_LENGTH, CommandError, RefundPayment
from services.payments.domain.payment import PaymentRuleError
from services.payments.processor import ProcessorUnavailable

router = APIRouter(prefix="/v1/admin", default_response_class=JSONResponse)
# Admin keys live apart from the keys orders derives from order ids.
KEY_PREFIX = "admin:"
RefundKey = Annotated[str, Depends(idempotency.key_header(MAX_KEY_LENGTH - len(KEY_PREFIX)))]


@router.post(
    "/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut,
    dependencies=[Admin], responses=errors.problems(404, 409, 422, notes={
        409: "the payment's state allows no refund (never captured, voided)",
        422: "invalid amount or reason, or the Idempotency-Key reused with another body",
    }),
    tags=["admin"], summary="Refund part or all of a payment (admin)",
    operation_id="refundPayment",
)
async def refund(
    payment_id: uuid.UUID,
    body: RefundRequest,
    ctx: Context,
    idempotency_key: RefundKey,
) -> RefundOut:
    """Refund part or all of a captured payment; publishes `payments.payment.refunded`."""
    command = RefundPayment(
        key=KEY_PREFIX + idempotency_key, payment_id=payment_id,
        amount=body.fen(ctx.currency), reason=body.reason,
    )
    try:
        answer = await service.refund(deps=ctx.payments, command=command)
    except (CommandError, PaymentRuleError) as exc:
        raise _problem(exc.code, exc.message, payment_id) from exc
    except ProcessorUnavailable as exc:
        raise errors.Problem(503, "overloaded", "Card processor unavailable", str(exc),
                             headers={"Retry-After": "5"}) from exc
    return RefundOut.of(answer)


def _problem(code: str, message: str, payment_id: uuid.UUID) -> errors.Problem:
    if code == "not_found":
        return errors.not_found(f"payment {payment_id}")
    if message == KEY_REUSED:
        return errors.Problem(422, "idempotency-key-reused", "Idempotency key reused", message,
                              field="Idempotency-Key")
    if code == "invalid_argument":
        return errors.validation_error("amount", message)
    # failed_precondition: the payment's state forbids it (e.g. never captured, voided).
    return errors.Problem(409, "conflict", "Conflict", message)
