"""Idempotent database bootstrap: the database, one login role and schema per service,
and a read-only `auditor`.

Each service can reach only its own schema; `auditor` can read every schema, including
tables created later (default privileges). Run as a superuser (the stack's admin DSN).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

SERVICES = ("orders", "payments", "membership", "analytics")
AUDITOR = "auditor"
ROLES = (*SERVICES, AUDITOR)
DEFAULT_DATABASE = "marketplace"
# Serialises concurrent bootstraps: roles are cluster-wide, and two sessions altering
# the same role at once fail with "tuple concurrently updated".
_BOOTSTRAP_LOCK = 0x6D6B7470

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
log = logging.getLogger("marketplace.dbsetup")


def _ident(name: str) -> str:
    """Quote an identifier we generated or were given; refuse anything unusual."""
    if not _IDENT.match(name):
        raise ValueError(f"unsupported database identifier {name!r}: use [a-z0-9_], max 63")
    return f'"{name}"'


def with_database(dsn: str, database: str) -> str:
    """The same URL pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def database_of(dsn: str, default: str = DEFAULT_DATABASE) -> str:
    """The database named in a postgresql:// URL, or `default`."""
    return urlsplit(dsn).path.lstrip("/") or default


def role_dsn(admin_dsn: str, database: str, role: str, password: str) -> str:
    """`postgresql://<role>:<pw>@host:port/<db>` on the admin DSN's server (query kept)."""
    parts = urlsplit(admin_dsn)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + quote(database)))


def role_dsns(admin_dsn: str, database: str, passwords: Mapping[str, str]) -> dict[str, str]:
    """Each service's DSN and the auditor's, keyed by role name."""
    return {role: role_dsn(admin_dsn, database, role, passwords[role]) for role in ROLES}


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier, so the plain password never reaches the server or its logs."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _connect_maintenance(admin_dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(with_database(admin_dsn, "postgres"))
    except asyncpg.InvalidCatalogNameError:
        return await asyncpg.connect(with_database(admin_dsn, "template1"))


async def _ensure_database(conn: asyncpg.Connection, database: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        await conn.execute(f"CREATE DATABASE {_ident(database)}")
        log.info("event=db.created database=%s", database)


async def _ensure_roles(conn: asyncpg.Connection, passwords: Mapping[str, str]) -> None:
    missing = [role for role in ROLES if not passwords.get(role)]
    if missing:
        raise ValueError(f"bootstrap needs a password for every role; missing: {missing}")
    for role in ROLES:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"CREATE ROLE {_ident(role)}")
            log.info("event=db.role_created role=%s", role)
        verifier = scram_verifier(passwords[role])
        await conn.execute(
            f"ALTER ROLE {_ident(role)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
            f" NOREPLICATION NOBYPASSRLS INHERIT PASSWORD '{verifier}'"
        )
    # Defence in depth: even a mistaken grant cannot make the auditor write.
    await conn.execute(f"ALTER ROLE {_ident(AUDITOR)} SET default_transaction_read_only = on")


async def _lock_down_database(conn: asyncpg.Connection, database: str) -> None:
    db = _ident(database)
    await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    await conn.execute(f"GRANT CONNECT ON DATABASE {db} TO {', '.join(map(_ident, ROLES))}")
    await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


async def _ensure_schemas(conn: asyncpg.Connection) -> None:
    auditor = _ident(AUDITOR)
    for svc in SERVICES:
        s = _ident(svc)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s} AUTHORIZATION {s}")
        await conn.execute(f"ALTER SCHEMA {s} OWNER TO {s}")
        # Through a transaction-pooling PgBouncer the schema cannot come from a startup
        # parameter (it refuses unknown ones, and ignoring it would lose it): the role's
        # own search_path applies to every server connection opened for it.
        await conn.execute(f"ALTER ROLE {s} SET search_path = {s}")
        others = ", ".join(_ident(o) for o in SERVICES if o != svc)
        await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC, {others}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {auditor}")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {auditor}")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {s} IN SCHEMA {s}"
            f" GRANT SELECT ON TABLES TO {auditor}"
        )
    # `marketplace analytics rebuild` replays the streams into this shadow schema.
    await conn.execute("CREATE SCHEMA IF NOT EXISTS analytics_rebuild AUTHORIZATION analytics")
    await conn.execute(
        "REVOKE ALL ON SCHEMA analytics_rebuild FROM PUBLIC, orders, payments, membership"
    )


async def bootstrap(admin_dsn: str, database: str, passwords: dict[str, str]) -> None:
    """Create or repair the database, roles, schemas and grants; safe to run any number of times.

    `passwords` maps every role in ROLES to its password (extra keys are ignored).
    """
    _ident(database)
    maintenance = await _connect_maintenance(admin_dsn)
    try:
        await maintenance.execute("SELECT pg_advisory_lock($1)", _BOOTSTRAP_LOCK)
        await _ensure_database(maintenance, database)
        await _ensure_roles(maintenance, passwords)
        target = await asyncpg.connect(with_database(admin_dsn, database))
        try:
            async with target.transaction():
                await _lock_down_database(target, database)
                await _ensure_schemas(target)
        finally:
            await target.close()
        log.info("event=db.bootstrapped database=%s roles=%s", database, ",".join(ROLES))
    finally:
        await maintenance.close()  # also releases the advisory lock
