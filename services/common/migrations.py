"""Numbered .sql migrations, applied once each, in order, under an advisory lock."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

COMMON_MIGRATIONS = Path(__file__).parent / "migrations"
SERVICES_DIR = Path(__file__).resolve().parents[1]

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files(service_dir: Path) -> list[tuple[str, Path]]:
    """The shared migrations (outbox, inbox) first, then the service's own, each sorted."""
    files = [(f"common/{p.name}", p) for p in sorted(COMMON_MIGRATIONS.glob("*.sql"))]
    files += [(p.name, p) for p in sorted((service_dir / "migrations").glob("*.sql"))]
    return files


async def migrate(conn: asyncpg.Connection, *, schema: str, service_dir: Path) -> list[str]:
    """Apply pending migrations into `schema`; returns the names applied now.

    Replicas starting together serialize on an advisory lock, so each file runs once.
    """
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(_LEDGER)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, path in migration_files(service_dir):
            if name in done:
                continue
            try:
                await conn.execute(path.read_text())
            except asyncpg.PostgresError as exc:
                raise RuntimeError(f"migration {schema}/{name} failed: {exc}") from exc
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "applied": applied_now})
    return applied_now


async def migrate_service(dsn: str, service_name: str) -> list[str]:
    """Run one service's migrations with its own role (the CLI's `migrate`)."""
    service_dir = SERVICES_DIR / service_name
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, schema=service_name, service_dir=service_dir)
    finally:
        await conn.close()
