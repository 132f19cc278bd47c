"""asyncpg pools bound to a service's own schema."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson

from services.common import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


async def fetch_by_ids(conn: asyncpg.Connection, select: str, column: str,
                       ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    """The rows of `select` (a query ending in WHERE) whose uuid `column` is one of `ids`.

    One id is asked as `column = $1`, several as `column = ANY($1)`. With `= ANY($1)`
    Postgres plans the statement afresh on every call (a generic plan, costed for an array
    of unknown length, never beats the custom one), which cost several times its execution;
    `= $1` keeps one cached plan per connection, and a lone checkout asks for one SKU and
    one member.
    """
    if len(ids) == 1:
        return await conn.fetch(f"{select} {column} = $1", ids[0])
    return await conn.fetch(f"{select} {column} = ANY($1::uuid[])", list(ids))


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release reset query (advisory unlock, UNLISTEN, RESET ALL).

    asyncpg still rolls back any open transaction before calling this. Pool users keep
    no session state: locks are transaction-scoped, SET is LOCAL, search_path comes
    from the startup parameters (or, through a pooler, from the role); LISTEN and session
    locks use `connect()` on the direct DSN instead. Saves one round trip on every
    release, several per checkout; through a transaction pooler the reset would run on
    whichever server connection the pooler picks, not this session's.
    """


class MeteredPool(asyncpg.Pool):
    """asyncpg's pool, timing each acquire and counting the acquires waiting now; its state
    is read by `metrics.POOLS` when /metrics is scraped, under `name`."""

    def __init__(self, dsn: str, *, name: str, **kwargs: Any) -> None:
        super().__init__(dsn, connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                         loop=None, **kwargs)
        self.name, self.waiting = name, 0
        self._acquired = metrics.DB_ACQUIRE.labels(name)

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 (asyncpg's)
        # Every way to a connection (`acquire`, `pool.fetch` and the like) comes through here.
        start = time.perf_counter()
        self.waiting += 1
        try:
            return await super()._acquire(timeout)  # type: ignore[misc]
        finally:
            self.waiting -= 1
            self._acquired.observe(time.perf_counter() - start)


async def _retrying(open_: Callable[[], Awaitable[T]], *, what: str, attempts: int) -> T:
    """`open_()`, retried with a growing pause while Postgres (or the pooler) starts."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            return await open_()
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            if attempt == attempts:
                raise RuntimeError(
                    f"could not connect to Postgres for {what} after {attempt} attempts: "
                    f"{exc}; check that the server named by the DATABASE_URL (or "
                    "DATABASE_SESSION_URL) is running"
                ) from exc
            log.warning(
                "postgres not reachable, retrying",
                extra={"attempt": attempt, "error": str(exc)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


async def create_pool(
    dsn: str,
    *,
    schema: str,
    application_name: str,
    min_size: int = 2,
    max_size: int = 20,
    pooler: bool = False,
    connect_attempts: int = 30,
) -> asyncpg.Pool:
    """Open a pool whose connections see only `schema`, retrying while Postgres starts.

    With `pooler` the DSN is a transaction-pooling PgBouncer: consecutive statements may
    reach different server sessions, so asyncpg keeps no named prepared statements, and
    the schema comes from the role's search_path (PgBouncer refuses it at start-up).
    """
    server_settings = {"application_name": application_name}
    if not pooler:
        server_settings["search_path"] = schema

    async def open_pool() -> asyncpg.Pool:
        pool = MeteredPool(
            dsn,
            name=application_name,
            min_size=min_size,
            max_size=max_size,
            server_settings=server_settings,
            init=_init_connection,
            reset=_keep_session,
            statement_cache_size=0 if pooler else 100,
            # Connections that broke (e.g. Postgres restarted) are replaced on next use.
            max_inactive_connection_lifetime=60.0,
            command_timeout=30.0,
            max_queries=50_000,
        )
        await pool  # opens its first connections
        metrics.POOLS.pools.add(pool)
        return pool

    return await _retrying(open_pool, what=application_name, attempts=connect_attempts)


async def connect(
    dsn: str, *, schema: str, application_name: str, connect_attempts: int = 1
) -> asyncpg.Connection:
    """One dedicated session (LISTEN, advisory locks, migrations), bound to `schema`.

    `dsn` must reach Postgres directly: a transaction pooler would hand its statements
    to other sessions."""

    async def open_conn() -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn,
            server_settings={"search_path": schema, "application_name": application_name},
        )
        return conn

    conn = await _retrying(open_conn, what=application_name, attempts=connect_attempts)
    await _init_connection(conn)
    return conn
