"""Data lifecycle: append-only tables lose what their retention no longer needs, in bounded
batches, so that a purge never holds a long lock, never rewrites a table, and never leaves
one transaction's worth of dead rows for vacuum to find at once.

Every service's purges are `Purge` rows (the shared outbox, inbox and dead letters, then the
service's own), run by `purge_all` from the observe loop under the schema's purge lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from services.common.settings import ServiceSettings


@dataclass(frozen=True, slots=True)
class Purge:
    """Rows of `table` that `expired` (a condition on `$2`, the retention `keep`) selects,
    deleted a batch at a time. An index must serve `expired`, or each batch scans the table."""

    table: str
    expired: str
    keep: timedelta

    @property
    def sql(self) -> str:
        """One batch: the physical addresses of up to `$1` expired rows, then those rows.
        SKIP LOCKED: a row a transaction holds right now is left for the next batch."""
        return (
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {self.table} WHERE {self.expired} "
            "LIMIT $1 FOR UPDATE SKIP LOCKED))"
        )


def shared(settings: ServiceSettings) -> list[Purge]:
    """The tables every service has (services/common/migrations), with their retention."""
    return [
        # Published rows are kept for `marketplace outbox republish` after a broker loss.
        Purge("outbox", "published_at < now() - $2::interval",
              timedelta(hours=settings.outbox_retention_h)),
        # Longer than any redelivery can come (the streams keep 7 days).
        Purge("inbox", "processed_at < now() - $2::interval",
              timedelta(days=settings.inbox_retention_days)),
        # Only dead letters already retried: one never retried is an event not yet applied.
        Purge("dead_letter", "retried_at < now() - $2::interval",
              timedelta(days=settings.dead_letter_retention_days)),
    ]


async def run_batch(conn: asyncpg.Connection, purge: Purge, *, batch: int) -> int:
    """Delete one batch (in the caller's transaction, if any); returns how many rows went."""
    result = await conn.execute(purge.sql, batch, purge.keep)
    return int(result.split()[-1])


async def purge_all(
    pool: asyncpg.Pool, purges: list[Purge], *, lock: str, batch: int = 1000,
    max_batches: int = 10_000,
) -> dict[str, int] | None:
    """Run every purge to the end, each batch its own short transaction holding the advisory
    transaction lock `lock` (so that it also holds behind a transaction-pooling PgBouncer).
    None if another replica holds the lock: it is purging. `max_batches` bounds one pass."""
    done = {p.table: 0 for p in purges}
    for purge in purges:
        for _ in range(max_batches):
            async with pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))",
                                           lock):
                    return None
                deleted = await run_batch(conn, purge, batch=batch)
            done[purge.table] += deleted
            if deleted < batch:
                break
    return done
