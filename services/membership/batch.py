"""The order consumer's batch path: each run of confirmations in a batch applied as one.

The shared `inbox.Consumer` claims a batch's inbox rows in one statement and, if anything
in the batch fails, rolls it back and applies it again with a savepoint per event through
the per-event handler (`handlers.handle`). On top of that, each run of consecutive
`orders.order.confirmed` events costs one locking read and one write per table
(`confirmations`), whatever its length. Any other event is handled on its own at its place
in the batch, so that a refund between two confirmations of a member lands between them.

Both ways lock every member the batch touches first, in one statement and in id order:
two replicas whose batches share members then wait on each other instead of deadlocking,
as they did when a refund locked its member at its place in the batch. A handler's own
FOR UPDATE later finds the row held by its transaction already and waits for nothing.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Sequence

import asyncpg
from nats.aio.msg import Msg

from services.common import inbox, telemetry
from services.common.events import Event
from services.membership import confirmations, handlers
from services.membership.store import members
from services.membership.store.members import MemberRow


def runs(events: Sequence[Event]) -> list[tuple[bool, list[Event]]]:
    """The events in order, cut into runs: (True, confirmations) or (False, the others)."""
    return [(confirmed, list(run)) for confirmed, run in
            itertools.groupby(events, key=lambda e: e.subject == handlers.CONFIRMED)]


async def lock_members(conn: asyncpg.Connection, events: Iterable[Event]) -> list[MemberRow]:
    """Lock the members the events' handlers lock, in one statement; the rows found."""
    wanted = {m for m in map(handlers.member_of, events) if m is not None}
    return await members.lock_many(conn, wanted) if wanted else []


async def apply_events(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event], handler: inbox.Handler
) -> inbox.Applied:
    """Apply every new event of the batch in order, inside the caller's transaction;
    `handler` applies the events that are not confirmations."""
    fresh = await inbox.claim(conn, consumer, events)
    done = inbox.Applied()
    for event in events:
        if event.id in fresh:
            fresh.discard(event.id)  # a second copy within the batch is a duplicate too
            done.applied.append(event)
        else:
            done.duplicates += 1
    locked: list[MemberRow] | None = await lock_members(conn, done.applied)
    for confirmed, run in runs(done.applied):
        if confirmed:
            await _confirm(conn, consumer, run, locked)
        else:
            for event in run:
                with telemetry.consumer_span(consumer, event):
                    await handler(conn, event)
        locked = None  # the rows read up front are stale now: later runs read theirs again
    return done


async def _confirm(
    conn: asyncpg.Connection, consumer: str, events: list[Event], locked: list[MemberRow] | None
) -> None:
    orders = [handlers.confirmation(event.message(), event) for event in events]
    run = (confirmations.start(orders, locked) if locked is not None
           else await confirmations.lock(conn, orders))
    for event, order in zip(events, orders, strict=True):
        with telemetry.consumer_span(consumer, event):  # its events continue its trace
            run.confirm(order)
    await run.write(conn)


def _readable(msgs: Iterable[Msg]) -> list[Event]:
    """The messages that are events; the fallback dead-letters the others on its own."""
    events: list[Event] = []
    for msg in msgs:
        with contextlib.suppress(ValueError):
            events.append(inbox.to_event(msg))
    return events


class OrderConsumer(inbox.Consumer):
    """The shared consumer, with each run of confirmations in a batch applied as one."""

    async def apply_batch(
        self, conn: asyncpg.Connection, events: Sequence[Event]
    ) -> inbox.Applied:
        return await apply_events(conn, self.name, events, self.handler)

    async def apply_each(self, conn: asyncpg.Connection, msgs: list[Msg]) -> inbox.Applied:
        """The shared fallback path, after locking the batch's members as `apply_events`
        does: its handlers would otherwise lock them event by event, out of id order."""
        async with conn.transaction():
            await lock_members(conn, _readable(msgs))
            return await super().apply_each(conn, msgs)
