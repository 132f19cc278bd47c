"""Points held for an order during checkout, then spent or given back.

    (none) --Reserve--> reserved --Commit--> committed --order refunded--> restored
                           |
                           +----Release--> released
    (none) --Release--> released (a tombstone: a late Reserve finds it and holds nothing)

Every call is idempotent on the order id: a replay answers with the recorded state.
Release of a committed reservation is refused (FAILED_PRECONDITION): committed points
come back only through the order's refund event (`orders.order.refunded`).
Locks are always taken member row first, then the reservation row, so calls on the
same member serialize and the balance can never be over-promised.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.membership import loyalty
from services.membership.store import members
from services.membership.store import points as store
from services.membership.store.members import MemberRow
from services.membership.store.points import Reservation


class ReservationError(Exception):
    """A call that cannot be applied; `kind` picks the gRPC status."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # not_found | failed_precondition | already_exists


async def reserve(
    pool: asyncpg.Pool, *, order_id: uuid.UUID, member_id: uuid.UUID, points: int
) -> tuple[Reservation, int]:
    """Hold `points` of the member's balance for the order; the reservation and balance."""
    async with pool.acquire() as conn, conn.transaction():
        member = await members.by_id(conn, member_id, for_update=True)
        if member is None:
            raise ReservationError("not_found", f"member {member_id} not found")
        existing = await store.reservation(conn, order_id)
        if existing is not None:
            _check_replay(existing, member_id=member_id, points=points)
            return existing, member.points_balance
        if member.points_available < points:
            raise ReservationError(
                "failed_precondition",
                f"insufficient points: {member.points_available} available, {points} asked",
            )
        if not await store.insert_reservation(conn, order_id=order_id, member_id=member_id,
                                              points=points, status="reserved"):
            # Another member's reserve for the same order id won the race.
            raise ReservationError("already_exists", f"order {order_id} holds other points")
        await members.add_points_held(conn, member_id, points)
        return Reservation(order_id, member_id, points, "reserved"), member.points_balance


def _check_replay(existing: Reservation, *, member_id: uuid.UUID, points: int) -> None:
    if existing.member_id is None:
        return  # released before it was made: answer "released", hold nothing
    if existing.member_id != member_id or existing.points != points:
        raise ReservationError(
            "already_exists",
            f"order {existing.order_id} already holds {existing.points} points of another "
            "request; an order id reserves once",
        )


async def commit(pool: asyncpg.Pool, *, order_id: uuid.UUID) -> tuple[Reservation, int]:
    """Spend the held points (ledger `redeem`); idempotent."""
    async with pool.acquire() as conn, conn.transaction():
        reservation, member = await _lock(conn, order_id)
        if member is not None and reservation.status in ("committed", "restored"):
            return reservation, member.points_balance
        if member is None or reservation.status == "released":
            raise ReservationError("failed_precondition",
                                   f"points for order {order_id} were released")
        await members.add_points_held(conn, member.id, -reservation.points)
        balance = await store.post(conn, member_id=member.id, delta=-reservation.points,
                                   reason="redeem", order_id=order_id)
        assert balance is not None, "a reserved order cannot have been redeemed"
        await store.set_reservation_status(conn, order_id, "committed")
        await loyalty.publish_points_changed(
            conn, member_id=member.id, delta=-reservation.points, balance=balance,
            reason="redeem", order_id=order_id,
        )
        return Reservation(order_id, member.id, reservation.points, "committed"), balance


async def release(pool: asyncpg.Pool, *, order_id: uuid.UUID) -> tuple[Reservation, int]:
    """Give held points back; for an unknown order, leave a released tombstone."""
    async with pool.acquire() as conn, conn.transaction():
        if await store.reservation(conn, order_id) is None:
            await store.insert_reservation(conn, order_id=order_id, member_id=None, points=0,
                                           status="released")
        reservation, member = await _lock(conn, order_id)
        if member is None or reservation.status == "released":
            return reservation, member.points_balance if member else 0
        if reservation.status in ("committed", "restored"):
            raise ReservationError(
                "failed_precondition",
                f"points for order {order_id} were already spent; refund the order instead",
            )
        await members.add_points_held(conn, member.id, -reservation.points)
        await store.set_reservation_status(conn, order_id, "released")
        released = Reservation(order_id, member.id, reservation.points, "released")
        return released, member.points_balance


async def _lock(
    conn: asyncpg.Connection, order_id: uuid.UUID
) -> tuple[Reservation, MemberRow | None]:
    """The reservation and its member, locked member first (no member for a tombstone)."""
    found = await store.reservation(conn, order_id)
    if found is None:
        raise ReservationError("not_found", f"no points reservation for order {order_id}")
    if found.member_id is None:
        return found, None
    member = await members.by_id(conn, found.member_id, for_update=True)
    reservation = await store.reservation(conn, order_id, for_update=True)
    assert member is not None and reservation is not None
    return reservation, member
