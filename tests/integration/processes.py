"""Replicas of one service as real processes (`python -m services.<name>`), started the way
`marketplace up` starts them: one database and one NATS, ports of their own each."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.cli.launcher import Child, Ports, service_env, spawn, stop_children, wait_ready
from services.cli.secrets import LocalSecrets, ensure_jwt_key
from tests.infra import FreshDb, free_port

SECRET = "replicas-test-internal-secret-0123456789"
ADMIN_KEY = "replicas-test-admin-key-0123456789"
GRPC_SERVICES = ("payments", "membership")


@dataclass
class Replica:
    child: Child
    http_port: int
    grpc_port: int | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def kill(self) -> None:
        """kill -9: no graceful shutdown, as when a pod dies."""
        self.child.proc.kill()
        self.child.proc.wait()

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of this process's /metrics (0 when it has none yet)."""
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"{self.url}/metrics")).text
        for line in text.splitlines():
            match = re.fullmatch(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
            if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
                return float(match.group(2))
        return 0.0


@contextlib.asynccontextmanager
async def replicas(
    name: str, count: int, *, db: FreshDb, nats_url: str, tmp: Path,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[list[Replica]]:
    """`count` ready replicas of the service; stopped (SIGTERM, then SIGKILL) afterwards."""
    secrets = LocalSecrets(passwords={}, admin_api_key=ADMIN_KEY, internal_auth_secret=SECRET)
    key_file = ensure_jwt_key(tmp / "jwt-ed25519.pem")
    started: list[Replica] = []
    try:
        for i in range(count):
            http = {name: free_port()}
            if name != "membership":  # where JWKS would be fetched from: unused here
                http["membership"] = free_port()
            grpc = {name: free_port()} if name in GRPC_SERVICES else {}
            child_env = service_env(name, dsns=db.dsns, nats_url=nats_url,
                                    ports=Ports(http=http, grpc=grpc), secrets=secrets,
                                    key_file=key_file) | dict(env or {})
            child = spawn(name, child_env, tmp / f"{name}-{i}")
            started.append(Replica(child, http[name], grpc.get(name)))
        await asyncio.gather(*(wait_ready(r.child, r.http_port, asyncio.Event())
                               for r in started))
        yield started
    finally:
        stop_children([r.child for r in started])
