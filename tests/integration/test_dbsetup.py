"""Database bootstrap on a real Postgres: each service is walled into its own schema, the
auditor reads everything and writes nothing, and a second bootstrap changes nothing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from services.cli.dbsetup import SERVICES, bootstrap
from tests.infra import TEST_PASSWORDS, FreshDb

MakeDb = Callable[..., Awaitable[FreshDb]]


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def create_ledger(db: FreshDb, service: str) -> None:
    """A table owned by `service` in its own schema, created after the bootstrap, one row."""
    async with connected(db.dsn(service)) as conn:
        await conn.execute(f"CREATE TABLE {service}.ledger (id int PRIMARY KEY, note text)")
        await conn.execute(f"INSERT INTO {service}.ledger VALUES (1, 'written by {service}')")


@pytest.fixture
async def db(fresh_db: MakeDb) -> FreshDb:
    db = await fresh_db()
    for service in SERVICES:
        await create_ledger(db, service)
    return db


async def test_service_reads_and_writes_its_own_schema(db: FreshDb) -> None:
    async with connected(db.dsn("orders")) as conn:
        await conn.execute("INSERT INTO ledger VALUES (2, 'unqualified name')")
        assert await conn.fetchval("SELECT count(*) FROM orders.ledger") == 2


async def test_service_cannot_read_another_services_table(db: FreshDb) -> None:
    async with connected(db.dsn("orders")) as conn:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM payments.ledger")


@pytest.mark.parametrize("schema", ["public", "payments"])
async def test_service_cannot_create_outside_its_schema(db: FreshDb, schema: str) -> None:
    async with connected(db.dsn("orders")) as conn:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.execute(f"CREATE TABLE {schema}.intruder (id int)")


async def test_auditor_reads_every_schema_including_tables_created_later(db: FreshDb) -> None:
    async with connected(db.auditor_dsn) as conn:
        for service in SERVICES:
            note = await conn.fetchval(f"SELECT note FROM {service}.ledger WHERE id = 1")
            assert note == f"written by {service}"


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO payments.ledger VALUES (9, 'forged')",
        "UPDATE payments.ledger SET note = 'forged'",
        "CREATE TABLE payments.auditor_table (id int)",
    ],
)
async def test_auditor_cannot_write(db: FreshDb, statement: str) -> None:
    async with connected(db.auditor_dsn) as conn:
        # Its sessions are read-only by default; lift that, so privileges alone must refuse.
        with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
            await conn.execute(statement)
        await conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.execute(statement)
    async with connected(db.admin_dsn) as conn:
        assert await conn.fetchval("SELECT note FROM payments.ledger") == "written by payments"


async def _acls(db: FreshDb) -> list[asyncpg.Record]:
    async with connected(db.admin_dsn) as conn:
        return await conn.fetch(
            """
            SELECT 'schema' AS kind, nspname AS name, nspowner::regrole::text AS owner,
                   nspacl::text AS acl
              FROM pg_namespace WHERE nspname = ANY($1::text[])
            UNION ALL
            SELECT 'database', datname, datdba::regrole::text, datacl::text
              FROM pg_database WHERE datname = current_database()
            UNION ALL
            SELECT 'default', defaclnamespace::regnamespace::text, defaclrole::regrole::text,
                   defaclacl::text
              FROM pg_default_acl
            ORDER BY 1, 2, 3
            """,
            [*SERVICES, "public"],
        )


async def test_bootstrap_twice_is_idempotent(db: FreshDb) -> None:
    before = await _acls(db)

    await bootstrap(db.admin_dsn, db.name, TEST_PASSWORDS)

    assert await _acls(db) == before
    async with connected(db.dsn("payments")) as conn:
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 1
    async with connected(db.dsn("orders")) as conn:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM payments.ledger")


@pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="authentication is the embedded server's pg_hba policy, not the bootstrap's",
)
async def test_roles_need_their_password(db: FreshDb) -> None:
    wrong = db.dsn("orders").replace(TEST_PASSWORDS["orders"], "not-the-password")
    with pytest.raises(asyncpg.exceptions.InvalidPasswordError):
        await asyncpg.connect(wrong)
