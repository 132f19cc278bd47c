"""Throw-away Postgres and NATS JetStream for a test session, and a fresh database per test.

The servers are started with the same code as `make run` (services.cli.pgserver and
natsserver), in a temporary directory on free ports. TEST_DATABASE_URL / TEST_NATS_URL
point the suite at existing servers instead.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from services.cli.dbsetup import AUDITOR, ROLES, bootstrap, role_dsns, with_database
from services.cli.natsserver import start_nats, stop_nats
from services.cli.pgserver import start_postgres, stop_postgres
from services.cli.procs import StackError

# Roles are cluster-wide and shared by every test database, so their passwords are fixed.
TEST_PASSWORDS = {role: f"test-{role}-password" for role in ROLES}
TEST_ADMIN_PASSWORD = "test-admin-password"
TEMP_PREFIX = "marketplace-test-"


def _ephemeral_low(default: int = 32768) -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


# Ports handed out below the kernel's ephemeral range. Inside it (what binding port 0 gives)
# the port is free only until the kernel picks it again as the local port of one of this
# session's own outgoing connections, which it does: a server then failed to bind it.
# Each port is handed out once per session, in an order of its own per process.
_LOW = _ephemeral_low()
_CANDIDATES = iter(random.Random(os.getpid()).sample(
    range(max(1024, _LOW - 12_000), _LOW), min(12_000, _LOW - 1024)))


def free_port() -> int:
    """A port no one listens on, that no outgoing connection will be given meanwhile."""
    for port in _CANDIDATES:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken by a server of this machine's: try the next
                continue
            return port
    raise RuntimeError("no free port left below the ephemeral range for this test session")


def _owned_temp_dir(kind: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    return root


def reap_stale_servers() -> list[Path]:
    """Stop and delete the servers of earlier test sessions that died without tearing down
    (killed by a timeout, SIGKILL): recognised by their temp dir, whose owner is gone."""
    reaped = []
    for root in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        owner_file = root / "owner.pid"
        try:
            owner = int(owner_file.read_text())
        except (FileNotFoundError, ValueError):
            if time.time() - root.stat().st_mtime < 300:
                continue  # being created right now
            owner = None
        if owner is not None and psutil.pid_exists(owner):
            continue
        with suppress(StackError, FileNotFoundError, ValueError):
            stop_postgres(root / "pg")
        with suppress(FileNotFoundError, ValueError):
            stop_nats(int((root / "nats.pid").read_text()), root / "nats.conf")
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """A fresh embedded Postgres for the duration; yields its superuser DSN."""
    root = _owned_temp_dir("pg")
    try:
        server = start_postgres(
            root / "pg",
            admin_password=TEST_ADMIN_PASSWORD,
            log_file=root / "postgres.log",
            port=free_port(),
        )
        try:
            yield server.admin_dsn
        finally:
            stop_postgres(root / "pg")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def embedded_nats(users: Mapping[str, str] | None = None) -> Iterator[str]:
    """A fresh nats-server with JetStream on files for the duration; yields its URL.

    With `users` (name -> password, see natsserver.nats_authorization) it requires them."""
    root = _owned_temp_dir("nats")
    conf = root / "nats.conf"
    try:
        server = start_nats(
            conf,
            root / "jetstream",
            log_file=root / "nats.log",
            port=free_port(),
            monitor_port=free_port(),
            users=users,
        )
        (root / "nats.pid").write_text(str(server.pid))
        try:
            yield server.url
        finally:
            stop_nats(server.pid, conf)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class FreshDb:
    """A bootstrapped database of its own: one DSN per service role, the auditor's, the admin's."""

    name: str
    admin_dsn: str  # superuser, pointing at this database
    dsns: dict[str, str]  # by role: orders, payments, membership, analytics, auditor

    def dsn(self, service: str) -> str:
        return self.dsns[service]

    @property
    def auditor_dsn(self) -> str:
        return self.dsns[AUDITOR]

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run a query as the read-only auditor (sees all four schemas)."""
        conn = await asyncpg.connect(self.auditor_dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


async def create_fresh_db(admin_dsn: str, prefix: str = "test") -> FreshDb:
    """Create and bootstrap a uniquely named database on the admin DSN's server."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    await bootstrap(admin_dsn, name, TEST_PASSWORDS)
    return FreshDb(
        name=name,
        admin_dsn=with_database(admin_dsn, name),
        dsns=role_dsns(admin_dsn, name, TEST_PASSWORDS),
    )


async def drop_db(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(with_database(admin_dsn, "postgres"))
    try:
        # FORCE: a test that leaked a pool must not keep its database alive.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
