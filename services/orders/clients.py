"""gRPC clients for payments and membership, with per-call deadlines and mapped errors."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio
from marketplace.common.v1 import money_pb2
from marketplace.membership.v1 import membership_pb2, membership_pb2_grpc
from marketplace.payments.v1 import payments_pb2, payments_pb2_grpc
from marketplace.payments.v1.payments_pb2 import Payment

from services.common.grpcutil import ServiceChannel
from services.orders.domain.order import Order

T = TypeVar("T")

# Codes after which the outcome is unknown or may change: retry later with the same key.
_TRANSIENT = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
})



class Unavailable(Exception):
    """No definite answer (down, timed out, overloaded): retry with the same idempotency key."""


class Rejected(Exception):
    """A definite refusal (invalid argument, failed precondition, ...)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code, self.message = code, message


class NotFound(Rejected):
    pass


async def _call(method: Callable[..., Awaitable[T]], request: Any, timeout_s: float) -> T:
    try:
        return await method(request, timeout=timeout_s)
    except aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
        if code in _TRANSIENT:
            raise Unavailable(f"{code.name}: {details}") from exc
        if code == grpc.StatusCode.NOT_FOUND:
            raise NotFound(code, details) from exc
        raise Rejected(code, details) from exc


def _capture_key(order_id: uuid.UUID) -> str:
    return f"capture:{order_id}"


def _sale(order: Order) -> payments_pb2.AuthorizeRequest:
    return payments_pb2.AuthorizeRequest(
        idempotency_key=f"auth:{order.id}", order_id=str(order.id),
        member_id=str(order.member_id), merchant_id=str(order.lines[0].merchant_id),
        amount=money_pb2.Money(amount=order.total, currency=order.currency),
        payment_token=order.payment_token, capture_idempotency_key=_capture_key(order.id),
    )


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _refusal(refusal: payments_pb2.Refusal) -> Exception:
    """An item's refusal as the exception its own call would have raised."""
    code = _CODES.get(refusal.code, grpc.StatusCode.UNKNOWN)
    if code in _TRANSIENT:
        return Unavailable(f"{code.name}: {refusal.message}")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(code, refusal.message)
    return Rejected(code, refusal.message)


class PaymentsClient:
    """PaymentService; every state change is keyed by the order id, so retries are safe."""

    def __init__(self, channel: ServiceChannel, *, timeout_s: float) -> None:
        self.stub = payments_pb2_grpc.PaymentServiceStub(channel)
        self.timeout_s = timeout_s

    async def authorize_batch(self, orders: Sequence[Order]) -> list[Payment | Exception]:
        """Authorize and capture each order's payment (a sale), all in one call: per order
        its Payment (CAPTURED, or AUTHORIZED when the processor took the hold but not yet
        the money: capture() with the same key then), or its refusal as Rejected or
        Unavailable. Raises Unavailable when the call as a whole got no answer."""
        request = payments_pb2.AuthorizeBatchRequest(requests=[_sale(o) for o in orders])
        reply = await _call(self.stub.AuthorizeBatch, request, self.timeout_s)
        return [r.payment if r.HasField("payment") else _refusal(r.refusal)
                for r in reply.results]

    async def capture(self, *, order_id: uuid.UUID, payment_id: str) -> Payment:
        request = payments_pb2.CaptureRequest(
            idempotency_key=_capture_key(order_id), payment_id=payment_id, amount=0)
        return await _call(self.stub.Capture, request, self.timeout_s)

    async def void(self, *, order_id: uuid.UUID, payment_id: str) -> Payment:
        request = payments_pb2.VoidRequest(
            idempotency_key=f"void:{order_id}", payment_id=payment_id)
        return await _call(self.stub.Void, request, self.timeout_s)

    async def refund(self, *, order_id: uuid.UUID, payment_id: str, reason: str) -> Payment:
        request = payments_pb2.RefundRequest(
            idempotency_key=f"refund:{order_id}", payment_id=payment_id, amount=0, reason=reason)
        return await _call(self.stub.Refund, request, self.timeout_s)

    async def find(self, *, order_id: uuid.UUID) -> Payment | None:
        """The payment for the order, or None when payments has never seen it."""
        try:
            return await _call(self.stub.GetPayment,
                               payments_pb2.GetPaymentRequest(order_id=str(order_id)),
                               self.timeout_s)
        except NotFound:
            return None


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """The member's terms for pricing; `points_balance` None when it was not looked up."""

    tier: str
    discount_bps: int
    points_balance: int | None


class MembershipClient:
    """MembershipService: the tier discount and points held for an order."""

    def __init__(self, channel: ServiceChannel, *, timeout_s: float) -> None:
        self.stub = membership_pb2_grpc.MembershipServiceStub(channel)
        self.timeout_s = timeout_s

    async def get_member(self, member_id: uuid.UUID) -> MemberInfo:
        reply = await _call(self.stub.GetMember,
                            membership_pb2.GetMemberRequest(member_id=str(member_id)),
                            self.timeout_s)
        return MemberInfo(tier=membership_pb2.Tier.Name(reply.tier).removeprefix("TIER_"),
                          discount_bps=reply.discount_bps, points_balance=reply.points_balance)

    async def reserve_points(self, *, order_id: uuid.UUID, member_id: uuid.UUID,
                             points: int) -> None:
        request = membership_pb2.ReservePointsRequest(
            order_id=str(order_id), member_id=str(member_id), points=points)
        await _call(self.stub.ReservePoints, request, self.timeout_s)

    async def commit_points(self, order_id: uuid.UUID) -> None:
        ref = membership_pb2.PointsReservationRef(order_id=str(order_id))
        await _call(self.stub.CommitPoints, ref, self.timeout_s)

    async def release_points(self, order_id: uuid.UUID) -> None:
        ref = membership_pb2.PointsReservationRef(order_id=str(order_id))
        await _call(self.stub.ReleasePoints, ref, self.timeout_s)
