"""The four services as processes over a Postgres and a NATS of their own, all restartable.

Used by tests/faults (kill -9, outages) and tests/security (real ports, real users).
NATS runs with one user per service (natsserver.nats_authorization), so every scenario
also proves that each service works within its own permissions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from services.cli.launcher import (
    START_GROUPS,
    Child,
    Ports,
    service_env,
    spawn,
    stop_children,
    wait_ready,
)
from services.cli.natsserver import NATS_ADMIN_USER, start_nats, stop_nats, with_credentials
from services.cli.pgserver import start_postgres, stop_postgres
from services.cli.secrets import NATS_USERS, LocalSecrets, ensure_jwt_key
from tests.infra import TEMP_PREFIX, TEST_ADMIN_PASSWORD, FreshDb, create_fresh_db, free_port

ADMIN_KEY = "faults-admin-key-0123456789abcdef"
SERVICES = ("orders", "payments", "membership", "analytics")
NATS_PASSWORDS = {user: f"nats-{user}-password" for user in NATS_USERS}
# Short deadlines so that an order whose payment is in doubt settles within a test.
FAST_RECOVERY = {"ORDERS_PAYMENT_DEADLINE_S": "15", "ORDERS_RECOVERY_INTERVAL_S": "1"}


class Servers:
    """An embedded Postgres and NATS on fixed ports and directories: stop and start keep data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg_port, self.nats_port, self.monitor_port = free_port(), free_port(), free_port()
        self.nats_pid: int | None = None
        self.admin_dsn = ""

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def nats_admin_url(self) -> str:
        return with_credentials(self.nats_url, NATS_ADMIN_USER, NATS_PASSWORDS[NATS_ADMIN_USER])

    def start_pg(self) -> None:
        server = start_postgres(
            self.root / "pg", admin_password=TEST_ADMIN_PASSWORD,
            log_file=self.root / "postgres.log", port=self.pg_port,
        )  # fmt: skip
        assert server.port == self.pg_port, "Postgres must come back on its port"
        self.admin_dsn = server.admin_dsn

    def stop_pg(self) -> None:
        stop_postgres(self.root / "pg")

    def start_nats(self) -> None:
        server = start_nats(
            self.root / "nats.conf", self.root / "js", log_file=self.root / "nats.log",
            port=self.nats_port, monitor_port=self.monitor_port, users=NATS_PASSWORDS,
        )  # fmt: skip
        assert server.port == self.nats_port, "NATS must come back on its port"
        self.nats_pid = server.pid
        (self.root / "nats.pid").write_text(str(server.pid))

    def stop_nats(self) -> None:
        stop_nats(self.nats_pid, self.root / "nats.conf")
        self.nats_pid = None

    def stop_all(self) -> None:
        with suppress(Exception):
            self.stop_nats()
        with suppress(Exception):
            self.stop_pg()


@dataclass
class ServiceStack:
    servers: Servers
    db: FreshDb
    ports: Ports
    env: dict[str, dict[str, str]]
    secrets: LocalSecrets
    log_dir: Path
    children: dict[str, Child] = field(default_factory=dict)
    admin_key: str = ADMIN_KEY

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.http[service]}"

    def grpc_target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports.grpc[service]}"

    async def start(self, name: str, **overrides: str) -> None:
        """(Re)start one service, with extra environment if given, and wait until ready."""
        self.children[name] = spawn(name, self.env[name] | overrides, self.log_dir)
        await wait_ready(self.children[name], self.ports.http[name], asyncio.Event())

    def kill(self, name: str) -> None:
        """kill -9: no graceful shutdown, as in a crash."""
        child = self.children[name]
        child.proc.kill()
        child.proc.wait()

    async def restart(self, name: str, **overrides: str) -> None:
        stop_children([self.children[name]])
        await self.start(name, **overrides)

    def pid(self, name: str) -> int:
        return self.children[name].proc.pid

    def alive(self, name: str) -> bool:
        return self.children[name].proc.poll() is None

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run a query as the read-only auditor (sees all four schemas)."""
        return await self.db.sql(query, *args)


def _env(
    servers: Servers, db: FreshDb, ports: Ports, secrets: LocalSecrets, key_file: Path
) -> dict[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {
        name: service_env(
            name, dsns=db.dsns, nats_url=servers.nats_url, ports=ports, secrets=secrets,
            key_file=key_file, base_env=base,
        ) | FAST_RECOVERY
        for name in SERVICES
    }  # fmt: skip


@asynccontextmanager
async def service_stack(prefix: str) -> AsyncIterator[ServiceStack]:
    """Postgres, NATS (with users) and the four services, all of this stack's own."""
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{prefix}-"))
    (root / "owner.pid").write_text(str(os.getpid()))  # tests.infra reaps it if we die
    servers = Servers(root)
    stack: ServiceStack | None = None
    try:
        await asyncio.to_thread(servers.start_pg)
        await asyncio.to_thread(servers.start_nats)
        db = await create_fresh_db(servers.admin_dsn, prefix)
        ports = Ports(
            http={name: free_port() for name in SERVICES},
            grpc={"payments": free_port(), "membership": free_port()},
        )
        secrets = LocalSecrets(
            passwords={}, admin_api_key=ADMIN_KEY,
            internal_auth_secret="faults-internal-secret-0123456789",
            nats_passwords=NATS_PASSWORDS,
        )  # fmt: skip
        key_file = ensure_jwt_key(root / "keys" / "jwt-ed25519.pem")  # chmods its dir 0700
        env = _env(servers, db, ports, secrets, key_file)
        stack = ServiceStack(servers, db, ports, env, secrets, root / "logs")
        for group in START_GROUPS:
            await asyncio.gather(*(stack.start(name) for name in group))
        yield stack
    finally:
        if stack is not None:
            stop_children(list(stack.children.values()))
        await asyncio.to_thread(servers.stop_all)
        shutil.rmtree(root, ignore_errors=True)


class Deployment(Protocol):
    """What a burst and its checks need of a running system: its database and its URLs
    (this module's ServiceStack, or the e2e stack in either shape)."""

    @property
    def db(self) -> FreshDb: ...

    def url(self, service: str) -> str: ...


@dataclass(frozen=True)
class Catalog:
    """One cheap seeded SKU, topped up so that no burst runs out of stock."""

    product_id: str
    sku_id: str
    price: int


async def make_catalog(stack: Deployment, *, top_up: int = 100_000) -> Catalog:
    """Seed the catalog, then restock one cheap SKU (as `restocked`, so the audit agrees)."""
    from seeds.seed import seed_if_empty

    await seed_if_empty(dict(stack.db.dsns), membership_url=None, progress=False)
    conn = await asyncpg.connect(stack.db.admin_dsn)
    try:
        row = await conn.fetchrow(
            "UPDATE orders.skus SET stock = stock + $1, restocked = restocked + $1 "
            "WHERE id = (SELECT id FROM orders.skus WHERE price BETWEEN 100 AND 5000 "
            "            ORDER BY id LIMIT 1) "
            "RETURNING id::text AS id, product_id::text AS product_id, price",
            top_up,
        )
    finally:
        await conn.close()
    assert row is not None, "the seeded catalog has a SKU priced between 1 and 50 yuan"
    return Catalog(row["product_id"], row["id"], row["price"])
