"""asyncpg pools bound to a service's own schema."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import orjson

log = logging.getLogger(__name__)


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
    from the startup parameters; LISTEN and session locks use `connect()` instead.
    Saves one round trip on every release, several per checkout.
    """


async def create_pool(
    dsn: str,
    *,
    schema: str,
    application_name: str,
    min_size: int = 2,
    max_size: int = 20,
    connect_attempts: int = 30,
) -> asyncpg.Pool:
    """Open a pool whose connections see only `schema`, retrying while Postgres starts."""
    server_settings = {"search_path": schema, "application_name": application_name}
    delay = 0.2
    for attempt in range(1, connect_attempts + 1):
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings=server_settings,
                init=_init_connection,
                reset=_keep_session,
                # Connections that broke (e.g. Postgres restarted) are replaced on next use.
                max_inactive_connection_lifetime=60.0,
                command_timeout=30.0,
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            if attempt == connect_attempts:
                raise RuntimeError(
                    f"could not connect to Postgres for {application_name} after "
                    f"{attempt} attempts: {exc}; check that the server named by the "
                    "DATABASE_URL is running"
                ) from exc
            log.warning(
                "postgres not reachable, retrying",
                extra={"attempt": attempt, "error": str(exc)},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


async def connect(dsn: str, *, schema: str, application_name: str) -> asyncpg.Connection:
    """One dedicated connection (LISTEN, advisory locks), bound to `schema`."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn,
        server_settings={"search_path": schema, "application_name": application_name},
    )
    await _init_connection(conn)
    return conn
