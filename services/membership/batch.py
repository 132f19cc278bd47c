"""The order consumer's batch path: each run of confirmations in a batch applied as one.

The shared `inbox.Consumer` claims a batch's inbox rows in one statement and, if anything
in the batch fails, rolls it back and applies it again with a savepoint per event through
the per-event handler (`handlers.handle`). On top of that, each run of consecutive
`orders.order.confirmed` events costs one locking read and one write per table
(`confirmations`), whatever its length. Any other event is handled on its own at its place
in the batch, so that a refund between two confirmations of a member lands between them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import asyncpg

from services.common import inbox, telemetry
from services.common.events import Event
from services.membership import confirmations, handlers


def runs(events: Sequence[Event]) -> list[tuple[bool, list[Event]]]:
    """The events in order, cut into runs: (True, confirmations) or (False, the others)."""
    return [(confirmed, list(run)) for confirmed, run in
            itertools.groupby(events, key=lambda e: e.subject == handlers.CONFIRMED)]


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
    for confirmed, run in runs(done.applied):
        if confirmed:
            await _confirm(conn, consumer, run)
            continue
        for event in run:
            with telemetry.consumer_span(consumer, event):
                await handler(conn, event)
    return done


async def _confirm(conn: asyncpg.Connection, consumer: str, events: list[Event]) -> None:
    orders = [handlers.confirmation(event.message(), event) for event in events]
    run = await confirmations.lock(conn, orders)
    for event, order in zip(events, orders, strict=True):
        with telemetry.consumer_span(consumer, event):  # its events continue its trace
            run.confirm(order)
    await run.write(conn)


class OrderConsumer(inbox.Consumer):
    """The shared consumer, with each run of confirmations in a batch applied as one."""

    async def apply_batch(
        self, conn: asyncpg.Connection, events: Sequence[Event]
    ) -> inbox.Applied:
        return await apply_events(conn, self.name, events, self.handler)
