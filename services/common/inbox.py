"""Idempotent inbox: durable pull consumers whose effects commit with an inbox row."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common import metrics, telemetry
from services.common.bus import Bus
from services.common.events import Event

log = logging.getLogger(__name__)

# A handler runs inside the consumer's transaction. It must let every error propagate: with
# no savepoint of its own, one it swallowed after a failed statement would leave the
# transaction aborted, and Postgres answers the COMMIT of an aborted transaction with a
# silent ROLLBACK.
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


@dataclass
class Applied:
    """What one batch did; added to the consumer's totals only once it is committed."""

    applied: list[Event] = field(default_factory=list)
    duplicates: int = 0
    dead_lettered: int = 0
    retry: list[Msg] = field(default_factory=list)  # to be redelivered later (nak)


CLAIM = (
    "INSERT INTO inbox (consumer, event_id, subject) "
    "SELECT $1, * FROM unnest($2::uuid[], $3::text[]) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


async def claim(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event]
) -> set[uuid.UUID]:
    """Insert the batch's inbox rows in one statement; the ids not seen before."""
    # In id order, so that two replicas claiming overlapping batches wait on each other's
    # rows in the same order instead of deadlocking.
    ids = sorted({e.id: e.subject for e in events}.items())
    rows = await conn.fetch(CLAIM, consumer, [i for i, _ in ids], [s for _, s in ids])
    return {r["event_id"] for r in rows}


async def apply_fresh(
    conn: asyncpg.Connection, consumer: str, events: Sequence[Event], handler: Handler
) -> Applied:
    """Claim the batch, then run `handler` on each new event in order, in the caller's
    transaction: the effects and the inbox rows commit together or not at all."""
    fresh = await claim(conn, consumer, events)
    done = Applied()
    for event in events:
        if event.id not in fresh:
            done.duplicates += 1
            continue
        fresh.discard(event.id)  # a second copy within the same batch is a duplicate too
        with telemetry.consumer_span(consumer, event):
            await handler(conn, event)
        done.applied.append(event)
    return done


class Consumer:
    """A durable JetStream pull consumer; each fetched batch is one Postgres transaction.

    A batch is applied optimistically: one statement claims every inbox row, the handler
    runs for each new event, and nothing else is paid per event. If anything in it fails,
    the transaction rolls back and the batch is applied again with a savepoint per event,
    so a duplicate is skipped and a failing event is retried (or, after `max_deliver`
    failures, dead-lettered) without undoing its neighbours. Acks go out only after the
    commit.
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
        self.fallbacks_total = 0  # batches that had to be applied event by event
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
                # The connection before the fetch: every delivery counts toward max_deliver,
                # so while Postgres is down the loop must fetch nothing, rather than batches
                # it cannot apply and that JetStream would soon stop redelivering for good.
                async with self.pool.acquire() as conn:
                    try:
                        msgs = await sub.fetch(self.batch_size, timeout=1.0)
                    except (TimeoutError, nats.errors.TimeoutError):
                        continue
                    done = await self.apply_on(conn, msgs)
                await self.settle(msgs, done)  # the connection back in the pool first
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
        """Apply one batch on a connection from the pool, then ack each message (nak the
        retries)."""
        async with self.pool.acquire() as conn:
            done = await self.apply_on(conn, msgs)
        await self.settle(msgs, done)

    async def apply_on(self, conn: asyncpg.Connection, msgs: list[Msg]) -> Applied:
        """Apply one batch in one transaction (event by event if it fails); what to ack and
        what to retry is the caller's, once the connection is back in the pool."""
        try:
            events = [to_event(m) for m in msgs]
            async with conn.transaction():
                done = await self.apply_batch(conn, events)
        except Exception as exc:  # the transaction is rolled back: nothing of it stays
            self._fell_back(exc)
            done = await self.apply_each(conn, msgs)
        return done

    async def settle(self, msgs: list[Msg], done: Applied) -> None:
        """After the commit: ack each message (nak the retries) and count what was done."""
        retry = {id(m) for m in done.retry}
        for msg in msgs:
            if id(msg) in retry:
                await msg.nak(delay=min(0.5 * msg.metadata.num_delivered, 5.0))
            else:
                await msg.ack()
        self.applied_total += len(done.applied)
        self.duplicates_total += done.duplicates
        self.dead_lettered_total += done.dead_lettered
        metrics.CONSUMER_APPLIED.labels(self.name).inc(len(done.applied))
        metrics.CONSUMER_DEAD.labels(self.name).inc(done.dead_lettered)
        self.committed(done)

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[Event]) -> Applied:
        """The optimistic path, inside the batch's transaction; any error undoes all of it."""
        return await apply_fresh(conn, self.name, events, self.handler)

    def committed(self, done: Applied) -> None:
        """Bookkeeping once a batch is committed and acked, whichever path applied it."""
        self.last_event_at = time.time()

    def _fell_back(self, exc: Exception) -> None:
        self.fallbacks_total += 1
        metrics.CONSUMER_FALLBACKS.labels(self.name).inc()
        log.warning(
            "consumer %s: batch failed, applying it event by event", self.name,
            extra={"consumer": self.name, "error": f"{type(exc).__name__}: {exc}"},
        )

    async def apply_each(self, conn: asyncpg.Connection, msgs: list[Msg]) -> Applied:
        """The careful path: one transaction, a savepoint per event. Acks are the caller's."""
        done = Applied()
        async with conn.transaction():
            for msg in msgs:
                await self._apply_one(conn, msg, done)
        return done

    async def _apply_one(self, conn: asyncpg.Connection, msg: Msg, done: Applied) -> None:
        try:
            event = to_event(msg)
        except ValueError as exc:
            await self._dead_letter(conn, msg, None, str(exc))
            done.dead_lettered += 1
            return
        with telemetry.consumer_span(self.name, event):
            try:
                async with conn.transaction():  # a savepoint per event
                    inserted = await conn.fetchval(
                        "INSERT INTO inbox (consumer, event_id, subject) VALUES ($1, $2, $3) "
                        "ON CONFLICT DO NOTHING RETURNING true",
                        self.name, event.id, event.subject,
                    )
                    if not inserted:
                        done.duplicates += 1
                        return
                    await self.handler(conn, event)
                done.applied.append(event)
            except Exception as exc:
                error = "".join(traceback.format_exception_only(exc)).strip()
                self.last_error = error
                if event.deliveries >= self.max_deliver:
                    await self._dead_letter(conn, msg, event, error)
                    done.dead_lettered += 1
                    return
                log.warning(
                    "event handler failed; will retry",
                    extra={"consumer": self.name, "event_id": str(event.id), "error": error},
                )
                done.retry.append(msg)

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

