"""Idempotent inbox: durable pull consumers whose effects commit with an inbox row."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common import telemetry
from services.common.bus import Bus
from services.common.events import Event

log = logging.getLogger(__name__)

Handler = Callable[[asyncpg.Connection, Event], Awaitable[None]]


def to_event(msg: Msg) -> Event:
    headers = dict(msg.headers or {})
    raw_id = headers.get("ce-id") or headers.get("Nats-Msg-Id")
    if raw_id is None:
        raise ValueError(f"event on {msg.subject} has no ce-id/Nats-Msg-Id header")
    meta = msg.metadata
    return Event(
        id=uuid.UUID(raw_id),
        subject=msg.subject,
        data=msg.data,
        headers=headers,
        deliveries=meta.num_delivered,
        stream_seq=meta.sequence.stream,
    )


class Consumer:
    """A durable JetStream pull consumer; each fetched batch is one Postgres transaction.

    Every event runs in its own savepoint together with its inbox row, so a duplicate is
    skipped, a failing event does not undo its neighbours, and acks go out only after
    the commit. After `max_deliver` failures the event lands in `dead_letter`.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        bus: Bus,
        name: str,
        stream: str,
        subjects: Sequence[str],
        handler: Handler,
        batch_size: int = 100,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
        linger_s: float = 0.0,
    ) -> None:
        self.pool, self.bus, self.name, self.stream = pool, bus, name, stream
        # After a batch smaller than batch_size, wait this long before fetching again, so
        # that under a steady trickle several events share a transaction (and its commit).
        self.linger_s = linger_s
        self.subjects, self.handler = list(subjects), handler
        self.batch_size, self.max_deliver, self.ack_wait_s = batch_size, max_deliver, ack_wait_s
        self.applied_total = 0
        self.duplicates_total = 0
        self.dead_lettered_total = 0
        self.last_error: str | None = None
        self.last_event_at: float | None = None

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=self.subjects,
            ack_wait=self.ack_wait_s,
            # JetStream stops redelivering after max_deliver; we dead-letter one step earlier.
            max_deliver=self.max_deliver + 1,
            max_ack_pending=10_000,
        )

    async def run(self) -> None:
        """Fetch and apply batches until cancelled; survives NATS and Postgres outages."""
        sub = None
        backoff = 0.2
        while True:
            try:
                if sub is None:
                    await self._declare()
                    sub = await self.bus.js.pull_subscribe(
                        "", durable=self.name, stream=self.stream, config=self.config()
                    )
                try:
                    msgs = await sub.fetch(self.batch_size, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                await self.apply(msgs)
                backoff = 0.2
                if self.linger_s and len(msgs) < self.batch_size:
                    await asyncio.sleep(self.linger_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("consumer %s retrying", self.name, extra={"error": self.last_error})
                if isinstance(exc, nats.js.errors.NotFoundError):
                    sub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _declare(self) -> None:
        """Create the durable consumer, or bring an existing one up to this config (e.g. a
        changed subject filter): pull_subscribe alone would keep what an older version made."""
        try:
            await self.bus.js.add_consumer(self.stream, config=self.config())
        except nats.js.errors.BadRequestError as exc:  # a change the server does not allow
            log.warning("consumer %s keeps its existing configuration", self.name,
                        extra={"error": str(exc)})

    async def apply(self, msgs: list[Msg]) -> None:
        """Apply one batch in one transaction, then ack or nak each message."""
        outcome: list[tuple[Msg, str]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            for msg in msgs:
                outcome.append((msg, await self._apply_one(conn, msg)))
        for msg, result in outcome:
            if result == "retry":
                await msg.nak(delay=min(0.5 * msg.metadata.num_delivered, 5.0))
            else:
                await msg.ack()
        self.last_event_at = time.time()

    async def _apply_one(self, conn: asyncpg.Connection, msg: Msg) -> str:
        try:
            event = to_event(msg)
        except ValueError as exc:
            await self._dead_letter(conn, msg, None, str(exc))
            return "dead"
        with telemetry.consumer_span(self.name, event):
            try:
                async with conn.transaction():  # a savepoint per event
                    inserted = await conn.fetchval(
                        "INSERT INTO inbox (consumer, event_id, subject) VALUES ($1, $2, $3) "
                        "ON CONFLICT DO NOTHING RETURNING true",
                        self.name, event.id, event.subject,
                    )
                    if not inserted:
                        self.duplicates_total += 1
                        return "duplicate"
                    await self.handler(conn, event)
                self.applied_total += 1
                return "applied"
            except Exception as exc:
                error = "".join(traceback.format_exception_only(exc)).strip()
                self.last_error = error
                if event.deliveries >= self.max_deliver:
                    await self._dead_letter(conn, msg, event, error)
                    return "dead"
                log.warning(
                    "event handler failed; will retry",
                    extra={"consumer": self.name, "event_id": str(event.id), "error": error},
                )
                return "retry"

    async def _dead_letter(
        self, conn: asyncpg.Connection, msg: Msg, event: Event | None, error: str
    ) -> None:
        event_id = event.id if event else uuid.uuid4()
        await conn.execute(
            "INSERT INTO dead_letter (consumer, event_id, subject, payload, headers, error, "
            "deliveries) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            self.name, event_id, msg.subject, msg.data, dict(msg.headers or {}), error,
            msg.metadata.num_delivered,
        )
        # The inbox row keeps a later redelivery from applying the event behind the DLQ's back.
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, subject) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            self.name, event_id, msg.subject,
        )
        self.dead_lettered_total += 1
        log.error(
            "event dead-lettered",
            extra={"consumer": self.name, "event_id": str(event_id), "error": error},
        )

    async def lag(self) -> int | None:
        """Messages in the stream this consumer has not yet been delivered, or None if unknown."""
        try:
            info = await self.bus.js.consumer_info(self.stream, self.name)
        except Exception:
            return None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def purge_processed(conn: asyncpg.Connection, *, older_than_days: float = 8.0) -> int:
    """Forget inbox rows older than any redelivery can be (streams keep 7 days)."""
    result = await conn.execute(
        "DELETE FROM inbox WHERE processed_at < now() - make_interval(days => $1::int)",
        int(older_than_days),
    )
    return int(result.split()[-1])
