"""Batch application: one fetched batch, one transaction, one inbox insert, one upsert per table.

The shared `inbox.Consumer` already claims a whole batch's inbox rows in one statement and
runs the handlers without savepoints, falling back to a savepoint per event when anything
fails. Analytics' projections are sums, so on top of that a batch folds its handlers'
bucket writes into multi-row upserts, flushed in the same transaction as the inbox rows.
In the per-event fallback each event flushes its own writes (`handlers.per_event`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.analytics.handlers import BatchHandler, orders_of, per_event
from services.analytics.writes import Writes
from services.common import inbox
from services.common.events import Event


@dataclass
class Projected(inbox.Applied):
    """An applied batch and the bucket writes it flushed."""

    writes: Writes = field(default_factory=Writes)


async def apply_events(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event], handler: BatchHandler
) -> Projected:
    """Apply every new event of the batch on `conn`, inside the caller's transaction."""
    writes = Writes()
    await writes.lock_orders(conn, orders_of(events))

    async def handle(conn: asyncpg.Connection, event: Event) -> None:
        await handler(conn, event, writes)

    done = await inbox.apply_fresh(conn, consumer, events, handle)
    await writes.flush(conn)
    return Projected(applied=done.applied, duplicates=done.duplicates, writes=writes)


class BatchConsumer(inbox.Consumer):
    """The shared consumer, with a batch's bucket writes folded into multi-row upserts."""

    def __init__(self, *, batch_handler: BatchHandler, **kwargs: Any) -> None:
        super().__init__(handler=per_event(batch_handler), **kwargs)
        self.batch_handler = batch_handler
        self.last_applied_time: datetime | None = None  # ce-time of the newest applied event

    async def apply_batch(
        self, conn: asyncpg.Connection, events: Sequence[Event]
    ) -> inbox.Applied:
        return await apply_events(conn, self.name, events, self.batch_handler)

    def committed(self, done: inbox.Applied) -> None:
        super().committed(done)
        if isinstance(done, Projected):  # the per-event fallback observes its own latency
            done.writes.observe_latency(datetime.now(UTC))
        newest = max((e.time for e in done.applied), default=None)
        if newest is not None and (self.last_applied_time is None
                                   or newest > self.last_applied_time):
            self.last_applied_time = newest

    def last_event_age(self, now: datetime) -> float | None:
        """Seconds since the newest applied event was produced (its ce-time)."""
        if self.last_applied_time is None:
            return None
        return max((now - self.last_applied_time).total_seconds(), 0.0)
