"""gRPC `marketplace.membership.v1.MembershipService`: what checkout asks of membership."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
from grpc import aio
from marketplace.membership.v1 import membership_pb2 as pb
from marketplace.membership.v1 import membership_pb2_grpc as pb_grpc

from services.membership import reservations
from services.membership.domain.tiers import Tier, discount_bps
from services.membership.store import members
from services.membership.store.points import Reservation

# The full name health answers for and reflection lists.
SERVICE = pb.DESCRIPTOR.services_by_name["MembershipService"].full_name
# Which caller may call what (checked by grpcutil.ServiceIdentityInterceptor).
ALLOWED_CALLERS = {"orders": {"GetMember", "ReservePoints", "CommitPoints", "ReleasePoints"}}

_STATUS = {
    "reserved": pb.RESERVATION_STATUS_RESERVED,
    "committed": pb.RESERVATION_STATUS_COMMITTED,
    "released": pb.RESERVATION_STATUS_RELEASED,
    # Committed, then given back by the order's refund: the member holds the points again.
    "restored": pb.RESERVATION_STATUS_RELEASED,
}
_CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
}


async def _uuid(value: str, field: str, context: aio.ServicerContext) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} must be a UUID")
        raise  # unreachable: abort raises


def _reservation(reservation: Reservation, balance: int) -> pb.PointsReservation:
    return pb.PointsReservation(
        order_id=str(reservation.order_id),
        member_id=str(reservation.member_id) if reservation.member_id else "",
        points=reservation.points,
        status=_STATUS[reservation.status],
        points_balance=balance,
    )


class MembershipServicer(pb_grpc.MembershipServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def GetMember(
        self, request: pb.GetMemberRequest, context: aio.ServicerContext
    ) -> pb.Member:
        member_id = await _uuid(request.member_id, "member_id", context)
        member = await members.by_id(self.pool, member_id)
        if member is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"member {member_id} not found")
        assert member is not None
        tier = Tier(member.tier)
        return pb.Member(
            id=str(member.id),
            tier=pb.Tier.Value(f"TIER_{tier.value}"),
            discount_bps=discount_bps(tier),
            points_balance=member.points_balance,
        )

    async def ReservePoints(
        self, request: pb.ReservePointsRequest, context: aio.ServicerContext
    ) -> pb.PointsReservation:
        order_id = await _uuid(request.order_id, "order_id", context)
        member_id = await _uuid(request.member_id, "member_id", context)
        if request.points <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "points must be positive")
        try:
            result = await reservations.reserve(
                self.pool, order_id=order_id, member_id=member_id, points=request.points
            )
        except reservations.ReservationError as exc:
            await context.abort(_CODES[exc.kind], str(exc))
        return _reservation(*result)

    async def CommitPoints(
        self, request: pb.PointsReservationRef, context: aio.ServicerContext
    ) -> pb.PointsReservation:
        order_id = await _uuid(request.order_id, "order_id", context)
        try:
            result = await reservations.commit(self.pool, order_id=order_id)
        except reservations.ReservationError as exc:
            await context.abort(_CODES[exc.kind], str(exc))
        return _reservation(*result)

    async def ReleasePoints(
        self, request: pb.PointsReservationRef, context: aio.ServicerContext
    ) -> pb.PointsReservation:
        order_id = await _uuid(request.order_id, "order_id", context)
        try:
            result = await reservations.release(self.pool, order_id=order_id)
        except reservations.ReservationError as exc:
            await context.abort(_CODES[exc.kind], str(exc))
        return _reservation(*result)
