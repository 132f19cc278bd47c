"""gRPC PaymentService: translates requests into commands and refusals into status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc import aio
from marketplace.payments.v1 import payments_pb2 as pb
from marketplace.payments.v1 import payments_pb2_grpc

from services.payments import service, store
from services.payments.commands import (
    AuthorizePayment,
    CapturePayment,
    CommandError,
    RefundPayment,
    VoidPayment,
    check_key,
    parse_uuid,
)
from services.payments.domain.payment import PaymentRuleError
from services.payments.processor import ProcessorUnavailable

log = logging.getLogger(__name__)

METHODS = {"Authorize", "AuthorizeBatch", "Capture", "Void", "Refund", "GetPayment"}
# The full name health answers for and reflection lists.
SERVICE = pb.DESCRIPTOR.services_by_name["PaymentService"].full_name
# Which services may call which methods (checked by grpcutil.ServiceIdentityInterceptor).
ALLOWED_CALLERS: dict[str, set[str]] = {"orders": set(METHODS)}

T = TypeVar("T")


async def _answer(context: aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    """Run `call`; map refusals onto gRPC status codes."""
    try:
        return await call()
    except CommandError as exc:
        await context.abort(grpc.StatusCode[exc.code.upper()], exc.message)
    except PaymentRuleError as exc:
        await context.abort(grpc.StatusCode[exc.code.upper()], exc.message)
    except ProcessorUnavailable as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    raise AssertionError("unreachable: context.abort raises")


# Left for recording the batch after the processor answered, within the caller's deadline.
_RECORD_MARGIN_S = 0.3


def _code(exc: Exception) -> grpc.StatusCode:
    """The status a refusal answers with (as `_answer` aborts with it)."""
    if isinstance(exc, CommandError | PaymentRuleError):
        return grpc.StatusCode[exc.code.upper()]
    if isinstance(exc, ProcessorUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    raise exc


def _command(request: pb.AuthorizeRequest, currency: str) -> AuthorizePayment:
    if not request.payment_token:
        raise CommandError("invalid_argument", "payment_token is required")
    return AuthorizePayment(
        key=check_key(request.idempotency_key),
        order_id=parse_uuid("order_id", request.order_id),
        member_id=parse_uuid("member_id", request.member_id),
        merchant_id=parse_uuid("merchant_id", request.merchant_id),
        amount=request.amount.amount,
        currency=request.amount.currency or currency,
        token=request.payment_token,
        capture_key=(check_key(request.capture_idempotency_key)
                     if request.capture_idempotency_key else ""),
    )


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, deps: service.Deps) -> None:
        self.deps = deps

    async def Authorize(
        self, request: pb.AuthorizeRequest, context: aio.ServicerContext
    ) -> pb.Payment:
        async def call() -> pb.Payment:
            command = _command(request, self.deps.currency)
            return await service.authorize(deps=self.deps, command=command)

        return await _answer(context, call)

    async def AuthorizeBatch(
        self, request: pb.AuthorizeBatchRequest, context: aio.ServicerContext
    ) -> pb.AuthorizeBatchResponse:
        """Each item answered as its own Authorize; the valid ones charged and recorded
        together, within the caller's deadline."""
        results: list[pb.AuthorizeResult | None] = []
        commands: list[AuthorizePayment] = []
        for item in request.requests:
            try:
                commands.append(_command(item, self.deps.currency))
                results.append(None)
            except CommandError as exc:
                results.append(pb.AuthorizeResult(refusal=pb.Refusal(
                    code=_code(exc).value[0], message=exc.message)))
        remaining = context.time_remaining()
        budget = None if remaining is None else max(remaining - _RECORD_MARGIN_S, 0.05)
        answers = iter(await service.authorize_batch(deps=self.deps, commands=commands,
                                                     budget_s=budget))
        response = pb.AuthorizeBatchResponse()
        for result in results:
            if result is None:
                answer = next(answers)
                result = (pb.AuthorizeResult(payment=answer)
                          if isinstance(answer, pb.Payment) else pb.AuthorizeResult(
                              refusal=pb.Refusal(code=_code(answer).value[0],
                                                 message=str(answer))))
            response.results.append(result)
        return response

    async def Capture(
        self, request: pb.CaptureRequest, context: aio.ServicerContext
    ) -> pb.Payment:
        async def call() -> pb.Payment:
            command = CapturePayment(
                key=check_key(request.idempotency_key),
                payment_id=parse_uuid("payment_id", request.payment_id),
                amount=request.amount,
            )
            return await service.capture(deps=self.deps, command=command)

        return await _answer(context, call)

    async def Void(
        self, request: pb.VoidRequest, context: aio.ServicerContext
    ) -> pb.Payment:
        async def call() -> pb.Payment:
            command = VoidPayment(
                key=check_key(request.idempotency_key),
                payment_id=parse_uuid("payment_id", request.payment_id),
            )
            return await service.void(deps=self.deps, command=command)

        return await _answer(context, call)

    async def Refund(
        self, request: pb.RefundRequest, context: aio.ServicerContext
    ) -> pb.Payment:
        async def call() -> pb.Payment:
            command = RefundPayment(
                key=check_key(request.idempotency_key),
                payment_id=parse_uuid("payment_id", request.payment_id),
                amount=request.amount,
                reason=request.reason[:500],
            )
            return await service.refund(deps=self.deps, command=command)

        return await _answer(context, call)

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: aio.ServicerContext
    ) -> pb.Payment:
        async def call() -> pb.Payment:
            which = request.WhichOneof("key")
            if which is None:
                raise CommandError("invalid_argument", "give payment_id or order_id")
            ident = parse_uuid(which, getattr(request, which))
            async with self.deps.pool.acquire() as conn:
                if which == "payment_id":
                    row = await store.get(conn, ident)
                else:
                    row = await store.get_by_order(conn, ident)
            if row is None:
                raise CommandError("not_found", f"no payment for {which} {ident}")
            return service.to_proto(row)

        return await _answer(context, call)
