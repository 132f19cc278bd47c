"""Rate limits that count for the whole cluster: one Postgres row per key, shared by replicas.

The rule is the generic cell rate algorithm (a token bucket kept as one timestamp): a key
may take a hit when its theoretical arrival time `tat` is no further ahead of now than the
burst allows; each hit pushes `tat` one interval further. The row stores, beside `tat`,
the `ceiling` it may not pass, and `CHECK (tat <= ceiling)` refuses a hit: the hit's
upsert then fails the statement (or transaction) it is part of, so a checkout can count
inside the statement that places it, writing nothing when refused. A refused hit changes
nothing, as in a token bucket. A row whose `tat` has passed is a full budget again, the
same as no row: those are purged. The table is UNLOGGED (each service's migration makes
it): a hit waits for no WAL flush of its own, and a Postgres crash or failover forgets the
counts (every budget starts full again) instead of costing every hit a durable write.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias

import asyncpg

from services.common.errors import Problem
from services.common.purge import Purge, run_batch

log = logging.getLogger(__name__)

# A pool (a connection of its own per statement) or a connection outside a transaction.
Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"
BUDGET_CONSTRAINT = "rate_limits_budget"
_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Rate:
    """`burst` hits at once, then one more each `every`."""

    burst: int
    every: timedelta

    @classmethod
    def per_window(cls, limit: int, window_s: float) -> Rate:
        """`limit` hits at once, earned back at `limit` per `window_s`."""
        return cls(limit, timedelta(seconds=window_s / limit))

    @classmethod
    def per_second(cls, burst: int, per_s: float) -> Rate:
        return cls(burst, timedelta(seconds=1 / per_s))

    @property
    def ceiling(self) -> timedelta:
        """How far ahead of now a key's `tat` may run after a hit."""
        return self.every * self.burst


def take_sql(*, name: str, key: str, every: str, ceiling: str, source: str = "") -> str:
    """The upsert that spends one hit of `key` under `name` (each a SQL expression).

    With `source` (e.g. "FROM claimed") it spends only for the rows that source yields, so
    a statement can count only what it goes on to do. Fails with a check violation of
    BUDGET_CONSTRAINT when the key has no hit left.
    """
    return (
        "INSERT INTO rate_limits AS r (name, key, tat, ceiling) "
        f"SELECT {name}, {key}, now() + {every}, now() + {ceiling} {source} "
        "ON CONFLICT (name, key) DO UPDATE "
        f"SET tat = greatest(r.tat, now()) + {every}, ceiling = EXCLUDED.ceiling"
    )


_TAKE = take_sql(name="$1::text", key="$2::text", every="$3::interval",
                 ceiling="$4::interval")
# After a refusal: seconds until the key's next hit fits under the ceiling.
_WAIT = (
    "SELECT extract(epoch FROM tat + $3::interval - $4::interval - now())::float8 "
    "FROM rate_limits WHERE name = $1 AND key = $2"
)
# Bounded, and partitioned between replicas purging at once (SKIP LOCKED); a key being hit
# right now is skipped. A budget full again is the same as no row.
_PURGE = Purge("rate_limits", "tat < now() - $2::interval", timedelta(0))


def is_refusal(exc: asyncpg.PostgresError) -> bool:
    """Whether the error is a rate limit's refusal (and not some other failure)."""
    return (isinstance(exc, asyncpg.CheckViolationError)
            and getattr(exc, "constraint_name", None) == BUDGET_CONSTRAINT)


class SharedLimit:
    """One named limit counted in the service's `rate_limits` table.

    Keys refused lately are remembered until their wait is over, and refused again from
    memory without a round trip: that is exact, because hits only ever push `tat` later.
    """

    def __init__(self, name: str, rate: Rate, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = _MAX_KEYS) -> None:
        self.name, self.rate, self.clock, self.max_keys = name, rate, clock, max_keys
        self._refused_until: dict[str, float] = {}

    def params(self) -> tuple[str, timedelta, timedelta]:
        """Name, interval and ceiling, for a statement built with `take_sql`."""
        return self.name, self.rate.every, self.rate.ceiling

    def known_wait(self, key: str) -> float:
        """Seconds this key is known to wait still (0: ask the database)."""
        until = self._refused_until.get(key)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._refused_until[key]
            return 0.0
        return left

    async def hit(self, conn: Db, key: str) -> float:
        """Spend one hit (one statement, outside a transaction): 0 if allowed, else the
        seconds until one is."""
        if wait := self.known_wait(key):
            return wait
        try:
            await conn.execute(_TAKE, *self._args(key))
        except asyncpg.CheckViolationError as exc:
            if not is_refusal(exc):
                raise
            return await self.refused(conn, key)
        return 0.0

    async def spend(self, conn: asyncpg.Connection, key: str) -> None:
        """Spend one hit inside the caller's transaction; a refusal fails the transaction
        (`is_refusal`), and `refused` then tells the wait."""
        await conn.execute(_TAKE, *self._args(key))

    async def refused(self, conn: Db, key: str) -> float:
        """After a refusal (here or in a statement built with `take_sql`): the wait, which
        is remembered. Never 0, so that a refusal always says to wait."""
        wait = await conn.fetchval(_WAIT, *self._args(key))
        wait = max(float(wait or 0.0), 0.001)
        if len(self._refused_until) >= self.max_keys:
            self._refused_until.clear()  # forgetting only costs round trips, never a wrong yes
        self._refused_until[key] = self.clock() + wait
        return wait

    def _args(self, key: str) -> tuple[str, str, timedelta, timedelta]:
        return self.name, key, self.rate.every, self.rate.ceiling


def too_many(retry_after_s: float, detail: str) -> Problem:
    """429 rate-limited, with Retry-After in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after_s))
    return Problem(429, "rate-limited", "Too many requests", detail,
                   headers={"Retry-After": str(seconds)})


async def purge_expired(conn: asyncpg.Connection, *, batch: int = 1000) -> int:
    """Delete rows whose budget is full again, `batch` at a time; returns how many."""
    purged = 0
    while True:
        done = await run_batch(conn, _PURGE, batch=batch)
        purged += done
        if done < batch:
            return purged


async def keep_purged(pool: asyncpg.Pool, *, interval_s: float = 60.0) -> None:
    """Purge expired rows every `interval_s`, for as long as the service runs."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            async with pool.acquire() as conn:
                await purge_expired(conn)
        except (asyncpg.PostgresError, OSError) as exc:  # the next pass tries again
            log.warning("rate limit purge failed", extra={"error": str(exc)})
