"""Batch application: one fetched batch, one transaction, one inbox insert, one upsert per table.

The shared `inbox.Consumer` gives each event a savepoint and an inbox insert of its own,
about eight round trips per event. Analytics' projections are sums, so a batch can claim
all its event ids in one statement, run the handlers, and fold their bucket writes into
multi-row upserts. Exactly-once holds the same way: the inbox rows and the effects commit
together or not at all. If anything in the batch fails, the whole transaction rolls back
and the batch is applied again the shared way, event by event, where a bad event is
retried or dead-lettered without holding up its neighbours.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.aio.msg import Msg

from services.analytics.handlers import BatchHandler, per_event
from services.analytics.writes import Writes
from services.common import telemetry
from services.common.events import Event
from services.common.inbox import Consumer, to_event

log = logging.getLogger(__name__)


@dataclass
class Applied:
    applied: list[Event] = field(default_factory=list)
    duplicates: int = 0
    writes: Writes = field(default_factory=Writes)


async def claim(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event]
) -> set[uuid.UUID]:
    """Insert the batch's inbox rows in one statement; the ids not seen before."""
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id, subject) "
        "SELECT $1, * FROM unnest($2::uuid[], $3::text[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        consumer, [e.id for e in events], [e.subject for e in events],
    )
    return {r["event_id"] for r in rows}


async def apply_events(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event], handler: BatchHandler
) -> Applied:
    """Apply every new event of the batch on `conn`, inside the caller's transaction."""
    fresh = await claim(conn, consumer, events)
    result = Applied()
    for event in events:
        if event.id not in fresh:
            result.duplicates += 1
            continue
        fresh.discard(event.id)  # a second copy within the same batch is a duplicate too
        with telemetry.consumer_span(consumer, event):
            await handler(conn, event, result.writes)
        result.applied.append(event)
    await result.writes.flush(conn)
    return result


class BatchConsumer(Consumer):
    """A durable pull consumer that applies each batch as described above."""

    def __init__(self, *, batch_handler: BatchHandler, **kwargs: Any) -> None:
        super().__init__(handler=per_event(batch_handler), **kwargs)
        self.batch_handler = batch_handler
        self.fallbacks_total = 0
        self.last_applied_time: datetime | None = None  # ce-time of the newest applied event

    async def apply(self, msgs: list[Msg]) -> None:
        try:
            events = [to_event(m) for m in msgs]
        except ValueError:
            await self._fallback(msgs, "an undecodable message")
            return
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                result = await apply_events(conn, self.name, events, self.batch_handler)
        except Exception as exc:
            await self._fallback(msgs, f"{type(exc).__name__}: {exc}", events)
            return
        for msg in msgs:
            await msg.ack()
        result.writes.observe_latency(datetime.now(UTC))
        self.applied_total += len(result.applied)
        self.duplicates_total += result.duplicates
        self._seen(result.applied)

    async def _fallback(self, msgs: list[Msg], why: str, events: Sequence[Event] = ()) -> None:
        self.fallbacks_total += 1
        log.warning("batch failed; applying it event by event",
                    extra={"consumer": self.name, "error": why})
        await super().apply(msgs)
        self._seen(events)

    def _seen(self, events: Sequence[Event]) -> None:
        self.last_event_at = time.time()
        if events:
            newest = max(e.time for e in events)
            if self.last_applied_time is None or newest > self.last_applied_time:
                self.last_applied_time = newest

    def last_event_age(self, now: datetime) -> float | None:
        """Seconds since the newest applied event was produced (its ce-time)."""
        if self.last_applied_time is None:
            return None
        return max((now - self.last_applied_time).total_seconds(), 0.0)
