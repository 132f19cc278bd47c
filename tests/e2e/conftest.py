"""All four services as real processes on free ports, with their own NATS and database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cli.launcher import (
    START_GROUPS,
    Child,
    Ports,
    service_env,
    spawn,
    stop_children,
    wait_ready,
)
from services.cli.secrets import LocalSecrets, ensure_jwt_key
from tests.e2e.otlp import OtlpReceiver
from tests.infra import FreshDb, create_fresh_db, drop_db, embedded_nats, free_port

ADMIN_KEY = "e2e-admin-key-0123456789abcdef"
SERVICES = ("orders", "payments", "membership", "analytics")


@dataclass
class Stack:
    db: FreshDb
    ports: Ports
    env: dict[str, dict[str, str]]
    children: dict[str, Child]
    otlp: OtlpReceiver
    log_dir: Path
    admin_key: str = ADMIN_KEY

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.http[service]}"

    async def start(self, name: str) -> None:
        """(Re)start one service and wait until it is ready."""
        self.children[name] = spawn(name, self.env[name], self.log_dir)
        await wait_ready(self.children[name], self.ports.http[name], asyncio.Event())

    def kill(self, name: str) -> None:
        """kill -9: no graceful shutdown, as in a crash."""
        child = self.children[name]
        child.proc.kill()
        child.proc.wait()


@pytest.fixture(scope="package")
def e2e_nats() -> Iterator[str]:
    with embedded_nats() as url:
        yield url


@pytest.fixture(scope="package")
async def stack(
    pg_admin_dsn: str, e2e_nats: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    db = await create_fresh_db(pg_admin_dsn, "e2e")
    ports = Ports(
        http={name: free_port() for name in SERVICES},
        grpc={"payments": free_port(), "membership": free_port()},
    )
    secrets = LocalSecrets(
        passwords={}, admin_api_key=ADMIN_KEY, internal_auth_secret="e2e-internal-secret-0123456789"
    )
    key_file = ensure_jwt_key(root / "jwt-ed25519.pem")
    with OtlpReceiver(free_port()) as otlp:
        base = dict(os.environ) | {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        env = {
            name: service_env(
                name, dsns=db.dsns, nats_url=e2e_nats, ports=ports, secrets=secrets,
                key_file=key_file, base_env=base,
            )
            | {"ORDERS_PAYMENT_DEADLINE_S": "20", "ORDERS_RECOVERY_INTERVAL_S": "1"}
            for name in SERVICES
        }
        s = Stack(db, ports, env, {}, otlp, root / "logs")
        try:
            for group in START_GROUPS:
                await asyncio.gather(*(s.start(name) for name in group))
            await _seed(s)
            yield s
        finally:
            stop_children(list(s.children.values()))
            await drop_db(pg_admin_dsn, db.name)


async def _seed(s: Stack) -> None:
    from seeds.seed import seed_if_empty

    seeded = await seed_if_empty(dict(s.db.dsns), membership_url=None, progress=False)
    assert seeded, "a fresh database must be seeded"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client
