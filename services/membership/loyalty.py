"""Spend, tiers and earned points as orders are confirmed and refunded.

Points for an order are earned at the tier the member held BEFORE that order: the
order that lifts a member into GOLD earns at SILVER's rate. The rate a customer saw
while paying is the rate they get, and refunds reverse what was credited in proportion:
all of it once the order is refunded in full.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1 import events_pb2 as ev

from services.common import outbox
from services.membership.domain import refunds as refund_rules
from services.membership.domain import standing
from services.membership.domain.tiers import Tier, tier_for_spend
from services.membership.store import members
from services.membership.store import points as store
from services.membership.store.members import MemberRow

SOURCE = "membership"
POINTS_CHANGED, TIER_CHANGED = "membership.points.changed", "membership.tier.changed"


class NotYetApplicable(Exception):
    """The event refers to something not known here (yet); the inbox retries it later."""


def points_changed(
    *, member_id: uuid.UUID, delta: int, balance: int, reason: str, order_id: uuid.UUID
) -> ev.PointsChanged:
    return ev.PointsChanged(member_id=str(member_id), delta=delta, balance=balance,
                            reason=reason, order_id=str(order_id))


def tier_changed(member_id: uuid.UUID, *, old_tier: str, new_tier: str) -> ev.TierChanged:
    changed_at = Timestamp()
    changed_at.FromDatetime(datetime.now(UTC))
    return ev.TierChanged(member_id=str(member_id), old_tier=old_tier, new_tier=new_tier,
                          changed_at=changed_at)


async def publish_points_changed(
    conn: asyncpg.Connection, *, member_id: uuid.UUID, delta: int, balance: int, reason: str,
    order_id: uuid.UUID,
) -> None:
    await outbox.add_event(
        conn, source=SOURCE, subject=POINTS_CHANGED, aggregate_id=str(member_id),
        message=points_changed(member_id=member_id, delta=delta, balance=balance,
                               reason=reason, order_id=order_id),
    )


async def _set_spend(
    conn: asyncpg.Connection, member_id: uuid.UUID, *, spend: int, tier: Tier, old_tier: Tier
) -> None:
    """Store the lifetime spend and tier; announce a tier change."""
    await members.set_spend_and_tier(conn, member_id, lifetime_spend=spend, tier=tier.value)
    if tier != old_tier:
        await outbox.add_event(
            conn, source=SOURCE, subject=TIER_CHANGED, aggregate_id=str(member_id),
            message=tier_changed(member_id, old_tier=old_tier.value, new_tier=tier.value),
        )


async def _lock_member(conn: asyncpg.Connection, member_id: uuid.UUID) -> MemberRow:
    member = await members.by_id(conn, member_id, for_update=True)
    if member is None:
        raise NotYetApplicable(f"member {member_id} is not known to membership")
    return member


async def order_confirmed(
    conn: asyncpg.Connection, *, order_id: uuid.UUID, member_id: uuid.UUID, total: int,
    confirmed_at: datetime,
) -> None:
    """Add the order to lifetime spend and credit its points; once per order.

    The rule is `standing.confirm`'s, as on the batch path (`confirmations`).
    """
    member = await _lock_member(conn, member_id)
    done = standing.confirm(member.standing, total)
    if not await store.insert_order(
        conn, order_id=order_id, member_id=member_id, total=total,
        tier_at_order=done.before.tier.value, points_earned=done.points,
        confirmed_at=confirmed_at,
    ):
        return  # confirmed before under another event id
    if done.points:
        balance = await store.post(conn, member_id=member_id, delta=done.points,
                                   reason="earn", order_id=order_id)
        if balance is not None:
            await publish_points_changed(conn, member_id=member_id, delta=done.points,
                                         balance=balance, reason="earn", order_id=order_id)
    await _set_spend(conn, member_id, spend=done.after.lifetime_spend, tier=done.after.tier,
                     old_tier=done.before.tier)


async def order_refunded(
    conn: asyncpg.Connection, *, order_id: uuid.UUID, member_id: uuid.UUID, refunded: int,
    refunded_total: int | None = None,
) -> None:
    """A refund of part or all of an order: spend, earned points and, in full, redeemed ones.

    `refunded` is this refund's amount; `refunded_total` the order's running refund, when
    the event carries it (then a duplicate or an older event changes nothing). Lifetime
    spend drops by what the refund adds; earned points are reversed in proportion to the
    running refund; points redeemed on the order come back only once it is refunded in
    full, since the member still holds part of what they paid for until then.
    """
    member = await _lock_member(conn, member_id)
    order = await store.order(conn, order_id, for_update=True)
    if order is None:
        raise NotYetApplicable(f"order {order_id} was refunded before its confirmation arrived")
    after = refund_rules.refunded_after(total=order.total, refunded_before=order.refunded,
                                        amount=refunded, refunded_total=refunded_total)
    amount = after - order.refunded
    if amount <= 0:
        return
    await store.add_refunded(conn, order_id, amount)
    if after >= order.total:
        # Restore first: points given back can then cover a reversal the member could not.
        member = await _restore_redeemed(conn, member, order_id)
    await _reverse_earned(conn, member, order, refunded=after)
    spend = member.lifetime_spend - amount
    await _set_spend(conn, member.id, spend=spend, tier=tier_for_spend(spend),
                     old_tier=Tier(member.tier))


async def _reverse_earned(
    conn: asyncpg.Connection, member: MemberRow, order: store.MemberOrder, *, refunded: int
) -> None:
    """Bring the order's reversed points up to its share refunded, within what is available.

    Points already spent cannot be taken back (the balance never goes negative); the
    ledger records what was actually reversed, so the shortfall is visible to an audit,
    and a later refund of the same order takes back what an earlier one could not.
    """
    if not order.points_earned:
        return
    target = refund_rules.points_to_reverse(points_earned=order.points_earned,
                                            total=order.total, refunded=refunded)
    due = target - await store.points_reversed(conn, order.order_id)
    take = min(due, member.points_available)
    if take <= 0:
        return
    balance = await store.post(conn, member_id=member.id, delta=-take, reason="reverse",
                               order_id=order.order_id, refunded_total=refunded)
    if balance is not None:
        await publish_points_changed(conn, member_id=member.id, delta=-take, balance=balance,
                                     reason="reverse", order_id=order.order_id)


async def _restore_redeemed(
    conn: asyncpg.Connection, member: MemberRow, order_id: uuid.UUID
) -> MemberRow:
    """Give back points paid for the order (or release its open hold); the member row after."""
    reservation = await store.reservation(conn, order_id, for_update=True)
    if reservation is None or reservation.member_id != member.id:
        return member
    if reservation.status == "reserved":
        await members.add_points_held(conn, member.id, -reservation.points)
        await store.set_reservation_status(conn, order_id, "released")
    elif reservation.status == "committed":
        balance = await store.post(conn, member_id=member.id, delta=reservation.points,
                                   reason="restore", order_id=order_id)
        await store.set_reservation_status(conn, order_id, "restored")
        if balance is not None:
            await publish_points_changed(conn, member_id=member.id, delta=reservation.points,
                                         balance=balance, reason="restore", order_id=order_id)
    else:
        return member
    refreshed = await members.by_id(conn, member.id)
    assert refreshed is not None
    return refreshed
