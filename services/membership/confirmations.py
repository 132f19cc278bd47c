"""A run of order confirmations applied together, in a fixed handful of statements.

The rule is `standing.confirm`, which `loyalty.order_confirmed` applies too, worked out in
memory from one locking read of the run's members, order after order, so that each sees
the spend, tier and balance the one before it left: points are earned at the tier held
before the order. What only the per-event path can decide (an order confirmed before or
twice in the run, a member not known here) raises, and the consumer applies the batch
again event by event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from google.protobuf.message import Message

from services.common import outbox
from services.membership import loyalty
from services.membership.domain import standing
from services.membership.domain.standing import Standing
from services.membership.store import members
from services.membership.store import points as store
from services.membership.store.members import MemberRow


@dataclass(frozen=True, slots=True)
class Confirmation:
    """An order confirmed in orders, as membership applies it."""

    order_id: uuid.UUID
    member_id: uuid.UUID
    total: int
    confirmed_at: datetime


class OneByOne(Exception):
    """The run holds a case only the per-event path decides; the batch is applied again
    event by event."""


class Run:
    """The writes of a run, gathered in event order from its members' locked standings."""

    def __init__(self, standings: dict[uuid.UUID, Standing]) -> None:
        self.standings = standings
        self.orders: list[store.ConfirmedOrder] = []
        self.postings: list[store.Posting] = []
        self.events: list[outbox.Pending] = []

    def confirm(self, order: Confirmation) -> None:
        """Apply one confirmation in memory; its events carry the current trace context."""
        done = standing.confirm(self.standings[order.member_id], order.total)
        self.standings[order.member_id] = done.after
        self.orders.append(store.ConfirmedOrder(
            order_id=order.order_id, member_id=order.member_id, total=order.total,
            tier_at_order=done.before.tier.value, points_earned=done.points,
            confirmed_at=order.confirmed_at,
        ))
        if done.points:
            balance = done.after.points_balance
            self.postings.append(store.Posting(
                member_id=order.member_id, delta=done.points, balance_after=balance,
                reason="earn", order_id=order.order_id,
            ))
            self._announce(loyalty.POINTS_CHANGED, order.member_id, loyalty.points_changed(
                member_id=order.member_id, delta=done.points, balance=balance, reason="earn",
                order_id=order.order_id,
            ))
        if done.tier_changed:
            self._announce(loyalty.TIER_CHANGED, order.member_id, loyalty.tier_changed(
                order.member_id, old_tier=done.before.tier.value,
                new_tier=done.after.tier.value,
            ))

    def _announce(self, subject: str, member_id: uuid.UUID, message: Message) -> None:
        self.events.append(outbox.pending(source=loyalty.SOURCE, subject=subject,
                                          aggregate_id=str(member_id), message=message))

    async def write(self, conn: asyncpg.Connection) -> None:
        """One statement per table: orders, ledger, members, outbox."""
        if await store.insert_orders(conn, self.orders) < len(self.orders):
            raise OneByOne("an order of the batch was confirmed before, under another event")
        await store.append(conn, self.postings)
        await members.set_standings(conn, self.standings)
        await outbox.add_events(conn, self.events)


async def lock(conn: asyncpg.Connection, orders: Sequence[Confirmation]) -> Run:
    """Lock the run's members (one statement) and start from their standings."""
    return start(orders, await members.lock_many(conn, {o.member_id for o in orders}))


def start(orders: Sequence[Confirmation], locked: Iterable[MemberRow]) -> Run:
    """The run, from the rows of its members that the caller has locked (and read) already;
    rows of other members are left out."""
    if len({o.order_id for o in orders}) < len(orders):
        raise OneByOne("an order is confirmed twice in the batch")
    wanted = {o.member_id for o in orders}
    standings = {m.id: m.standing for m in locked if m.id in wanted}
    if missing := wanted - standings.keys():
        raise loyalty.NotYetApplicable(
            f"members {sorted(map(str, missing))} are not known to membership")
    return Run(standings)
