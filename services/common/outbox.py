"""Transactional outbox: write events with the domain change, relay them to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message

from services.common import metrics, telemetry
from services.common.bus import Bus
from services.common.db import connect
from services.common.events import SUBJECTS, envelope_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pending:
    """An event ready to be inserted into the outbox: the row's values, in column order."""

    event_id: uuid.UUID
    subject: str
    aggregate_id: str
    payload: bytes
    headers: dict[str, str]


def pending(
    *, source: str, subject: str, aggregate_id: str, message: Message,
    event_id: uuid.UUID | None = None,
) -> Pending:
    """The outbox row of an event, checked against the catalogue, with the trace context.

    For a statement that writes its event itself (e.g. in a CTE); `add_event` inserts one.
    """
    expected = SUBJECTS.get(subject)
    if expected is None or not isinstance(message, expected):
        raise TypeError(f"{subject} carries {expected}, not {type(message).__name__}")
    event_id = event_id or uuid.uuid4()
    headers = envelope_headers(subject, event_id, source)
    telemetry.inject(headers)  # the trace continues in whoever consumes this event
    return Pending(event_id, subject, aggregate_id, message.SerializeToString(), headers)


# The one way any statement writes the outbox: `insert_sql` over rows of COLUMNS, in order.
COLUMNS = "event_id, subject, aggregate_id, payload, headers"
_ARRAY_TYPES = ("uuid[]", "text[]", "text[]", "bytea[]", "jsonb[]")


def insert_sql(rows: str) -> str:
    """`INSERT INTO outbox` of `rows`: VALUES or a query yielding COLUMNS, in that order.

    Every statement that writes events composes this (the placing and confirming CTEs,
    payments' sale), so the table's shape is written down once.
    """
    return f"INSERT INTO outbox ({COLUMNS}) {rows}"


def unnest_sql(first: int) -> str:
    """A FROM item of events passed as `arrays(...)` from parameter `$first` on: the five
    arrays, unnested WITH ORDINALITY as `e(event_id, ..., headers, n)`, `n` from 1."""
    params = ", ".join(f"${first + i}::{t}" for i, t in enumerate(_ARRAY_TYPES))
    return f"unnest({params}) WITH ORDINALITY AS e({COLUMNS}, n)"


def arrays(events: Sequence[Pending]) -> tuple[list[Any], ...]:
    """The five parameters of `unnest_sql`, one element per event."""
    return ([e.event_id for e in events], [e.subject for e in events],
            [e.aggregate_id for e in events], [e.payload for e in events],
            [e.headers for e in events])


_INSERT_ONE = insert_sql("VALUES ($1, $2, $3, $4, $5)")
_INSERT_MANY = insert_sql(f"SELECT {COLUMNS} FROM {unnest_sql(1)} ORDER BY n")


async def add_event(
    conn: asyncpg.Connection,
    *,
    source: str,
    subject: str,
    aggregate_id: str,
    message: Message,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert an event into the outbox inside the caller's transaction."""
    row = pending(source=source, subject=subject, aggregate_id=aggregate_id, message=message,
                  event_id=event_id)
    await conn.execute(_INSERT_ONE, row.event_id, row.subject, row.aggregate_id, row.payload,
                       row.headers)
    return row.event_id


async def add_events(conn: asyncpg.Connection, events: Sequence[Pending]) -> None:
    """Insert events (made by `pending`) into the outbox in one statement, in the order
    given: their `seq` follows it, and the relay is notified once."""
    if not events:
        return
    await conn.execute(_INSERT_MANY, *arrays(events))


# Marks what the last batch published and asks for the next one: both through the
# outbox_pending partial index, so the relay never reads the published history.
DRAIN = (
    "WITH marked AS (UPDATE outbox SET published_at = now() "
    "  WHERE seq = ANY($2::bigint[]) AND published_at IS NULL) "
    "SELECT seq, event_id, subject, aggregate_id, payload, headers FROM outbox "
    "WHERE published_at IS NULL AND seq <> ALL($2::bigint[]) ORDER BY seq LIMIT $1"
)


class OutboxRelay:
    """Publishes pending outbox rows in order per aggregate, with awaited JetStream acks.

    One relay per service is active at a time (a session advisory lock), so that the
    order per aggregate holds with several replicas; the others wait as standbys.
    Woken by LISTEN/NOTIFY, with a slow poll as a safety net; after a wake it lingers
    `linger_s` (as a Kafka producer's linger.ms) so a steady trickle shares round trips.
    `dsn` must reach Postgres directly (the service's session DSN): the lock and LISTEN
    belong to a session, which a transaction pooler does not keep.
    """

    def __init__(
        self, dsn: str, bus: Bus, *, schema: str, batch_size: int = 500, poll_s: float = 1.0,
        linger_s: float = 0.0,
    ) -> None:
        self.dsn, self.bus, self.schema = dsn, bus, schema
        self.batch_size, self.poll_s, self.linger_s = batch_size, poll_s, linger_s
        self._wake = asyncio.Event()
        self._unmarked: list[int] = []  # published, marked by the next statement
        self.published_total = 0
        self.backlog = 0
        self.is_leader = False
        self.last_error: str | None = None

    async def run(self) -> None:
        """Run until cancelled, reconnecting to Postgres and NATS as needed."""
        backoff = 0.2
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost DB connection must not end the relay
                self.is_leader = False
                self.last_error = str(exc)
                log.warning("outbox relay restarting", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2

    async def _run_once(self) -> None:
        conn = await connect(self.dsn, schema=self.schema, application_name=f"{self.schema}-relay")
        try:
            # Standby replicas poll for the lock; only the leader publishes.
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"outbox:{self.schema}"
            ):
                # Another replica publishes now: an error from this one's turn is history.
                self.last_error = None
                await asyncio.sleep(self.poll_s)
            self.is_leader = True
            await conn.add_listener(f"outbox_{self.schema}", self._on_notify)
            while True:
                # Cleared before draining: a NOTIFY during the drain wakes the next round.
                self._wake.clear()
                await self.drain(conn)
                self.last_error = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
                if self.linger_s and self._wake.is_set():
                    # Woken by a commit: the ones right behind it join the same batch.
                    await asyncio.sleep(self.linger_s)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):  # else the next leader publishes them again
                await asyncio.shield(self._mark(conn))
            await conn.close(timeout=2)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def drain(self, conn: asyncpg.Connection) -> int:
        """Publish pending rows batch by batch until none is left; returns how many went.

        Rows JetStream has acknowledged are marked published by the statement that asks
        for the next batch (the next round's, when this one drained everything), so a
        batch costs one round trip, not two. Until then they are still pending in the
        table: a relay that dies before marking them publishes them again, under the same
        Nats-Msg-Id, which JetStream and the consumers' inboxes drop.
        """
        total = 0
        while True:
            rows = await conn.fetch(DRAIN, self.batch_size, self._unmarked)
            self._unmarked = []
            self.backlog = len(rows)
            if not rows:
                return total
            sent = await self._publish(rows)
            self._unmarked = sent
            total += len(sent)
            self.published_total += len(sent)
            metrics.OUTBOX_PUBLISHED.inc(len(sent))
            if len(sent) < len(rows):
                raise ConnectionError(f"published {len(sent)} of {len(rows)} outbox rows")
            if len(rows) < self.batch_size:  # drained: no need to ask again until woken
                self.backlog = 0
                return total

    async def _mark(self, conn: asyncpg.Connection) -> None:
        """Mark what was published and not yet marked (on the way out)."""
        if self._unmarked and not conn.is_closed():
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[]) "
                "AND published_at IS NULL", self._unmarked)
            self._unmarked = []

    async def _publish(self, rows: list[asyncpg.Record]) -> list[int]:
        """Aggregates go out side by side; within one, strictly in sequence."""
        chains: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            chains[row["aggregate_id"]].append(row)
        sent: list[int] = []

        async def chain(items: list[asyncpg.Record]) -> None:
            for row in items:
                await self.bus.publish(row["subject"], bytes(row["payload"]), row["headers"])
                sent.append(row["seq"])

        results = await asyncio.gather(*(chain(c) for c in chains.values()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            log.warning("outbox publish failed", extra={"error": str(errors[0])})
        return sent


# The oldest pending row first, by the partial index on pending rows; the count stops at a
# bound, so a backlog of millions costs no more to watch than one of 100,000.
_BACKLOG = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL
                              LIMIT 100000) p) AS backlog,
       coalesce((SELECT extract(epoch FROM now() - created_at) FROM outbox
                  WHERE published_at IS NULL ORDER BY seq LIMIT 1), 0) AS age_s
"""


async def backlog(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, float]:
    """(rows not yet published, age in seconds of the oldest of them, 0 when none)."""
    row = await conn.fetchrow(_BACKLOG)
    assert row is not None
    return int(row["backlog"]), float(row["age_s"])


async def republish_since(conn: asyncpg.Connection, since: Any) -> int:
    """Mark rows published since `since` as pending again (after a broker lost data)."""
    result = await conn.execute(
        "UPDATE outbox SET published_at = NULL WHERE published_at >= $1", since
    )
    return int(result.split()[-1])
