"""A membership service running in-process on real ports, against real Postgres and NATS."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc import aio
from marketplace.membership.v1 import membership_pb2_grpc as pb_grpc

from services.common import grpcutil, runtime
from services.common.bus import Bus
from services.membership import bootstrap
from services.membership.api.deps import Context
from services.membership.settings import MembershipSettings
from tests.helpers import reset_streams
from tests.infra import FreshDb, free_port
from tests.integration.inprocess import run_in_process

SECRET = "membership-test-secret-0123456789"


def write_key(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 private key in a PEM PKCS8 file."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return key


@dataclass
class Running:
    settings: MembershipSettings
    service: runtime.Service[Context]
    http: httpx.AsyncClient
    channel: aio.Channel
    stub: pb_grpc.MembershipServiceStub
    bus: Bus
    db: FreshDb
    key: Ed25519PrivateKey
    stop: Callable[[], Awaitable[None]]  # idempotent; the fixture stops whatever is left

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}/.well-known/jwks.json"


StartMembership = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_membership(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str, tmp_path: Path
) -> AsyncIterator[StartMembership]:
    """`await start_membership(**settings)`: the service with its own database and keys."""
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(**overrides: Any) -> Running:
        await reset_streams(nats_url)
        db = await fresh_db("membership")
        key_file = tmp_path / f"signing-{uuid.uuid4().hex}.pem"
        key = write_key(key_file)
        fields: dict[str, Any] = {
            "database_url": db.dsn("membership"), "nats_url": nats_url,
            "http_port": free_port(), "grpc_port": free_port(), "internal_auth_secret": SECRET,
            "environment": "test", "jwt_private_key_file": key_file, "db_pool_max": 10,
        }
        settings = MembershipSettings(**(fields | overrides))
        running = contextlib.AsyncExitStack()
        stops.append(running.aclose)
        service = await running.enter_async_context(run_in_process(bootstrap.start, settings))
        http = await running.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10))
        channel = grpcutil.channel(f"127.0.0.1:{settings.grpc_port}", service="orders",
                                   secret=SECRET, timeout_s=10)
        running.push_async_callback(channel.close)
        bus = await Bus.connect(nats_url, name="membership-test")
        running.push_async_callback(bus.close)
        return Running(settings, service, http, channel, pb_grpc.MembershipServiceStub(channel),
                       bus, db, key, running.aclose)

    yield start
    for stop in reversed(stops):
        await stop()


@pytest.fixture
async def membership(start_membership: StartMembership) -> Running:
    return await start_membership()
