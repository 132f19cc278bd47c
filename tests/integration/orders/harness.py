"""Orders, payments and membership in-process on real ports, sharing one fresh database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from services.cli.secrets import ensure_jwt_key
from services.common import runtime
from services.common.settings import ServiceSettings
from services.membership import bootstrap as membership_bootstrap
from services.membership.settings import MembershipSettings
from services.orders import bootstrap as orders_bootstrap
from services.orders.settings import OrdersSettings
from services.payments import bootstrap as payments_bootstrap
from services.payments.settings import PaymentsSettings
from tests.infra import FreshDb, free_port
from tests.integration.inprocess import run_in_process

SECRET = "orders-test-internal-secret-0123456789"
ADMIN_KEY = "orders-test-admin-key-0123456789"
PASSWORD = "Correct-Horse-42"


@dataclass
class Stack:
    """What a test talks to: each service's HTTP client, ports, and the orders schema."""

    db: FreshDb
    nats_url: str
    tmp: Path
    payments_grpc_port: int
    membership_grpc_port: int = field(default_factory=free_port)
    orders_settings: OrdersSettings | None = None
    orders: httpx.AsyncClient | None = None
    membership: httpx.AsyncClient | None = None
    payments: httpx.AsyncClient | None = None
    _running: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def serve(
        self, start: Callable[..., Awaitable[runtime.Service[Any]]], settings: ServiceSettings
    ) -> httpx.AsyncClient:
        """The service running (stopped by `stop`), and a client of its HTTP port."""
        await self._running.enter_async_context(run_in_process(start, settings))
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=30)
        self._running.push_async_callback(client.aclose)
        return client

    async def start_membership(self) -> None:
        key = ensure_jwt_key(self.tmp / f"jwt-{uuid.uuid4().hex}.pem")
        settings = MembershipSettings(
            database_url=self.db.dsn("membership"), nats_url=self.nats_url, http_port=free_port(),
            grpc_port=self.membership_grpc_port, internal_auth_secret=SECRET,
            environment="test", jwt_private_key_file=key, db_pool_max=10,
        )
        self.membership = await self.serve(membership_bootstrap.start, settings)

    async def start_payments(self) -> None:
        settings = PaymentsSettings(
            database_url=self.db.dsn("payments"), nats_url=self.nats_url, http_port=free_port(),
            grpc_port=self.payments_grpc_port, internal_auth_secret=SECRET, environment="test",
            admin_api_key=ADMIN_KEY, jwks_url=self.jwks_url, db_pool_max=10,
        )
        self.payments = await self.serve(payments_bootstrap.start, settings)

    async def start_orders(self, **overrides: Any) -> None:
        fields: dict[str, Any] = {
            "database_url": self.db.dsn("orders"), "nats_url": self.nats_url,
            "http_port": free_port(),
            "payments_target": f"127.0.0.1:{self.payments_grpc_port}",
            "membership_target": f"127.0.0.1:{self.membership_grpc_port}",
            "jwks_url": self.jwks_url, "internal_auth_secret": SECRET, "environment": "test",
            "admin_api_key": ADMIN_KEY, "recovery_interval_s": 0.2, "recovery_grace_s": 1.0,
            "rpc_timeout_s": 2.0, "db_pool_max": 60,
        }
        self.orders_settings = OrdersSettings(**(fields | overrides))
        self.orders = await self.serve(orders_bootstrap.start, self.orders_settings)

    @property
    def jwks_url(self) -> str:
        """Membership's JWKS (a dead address until membership runs: catalog needs no token)."""
        if self.membership is None:
            return f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
        return f"{self.membership.base_url}/.well-known/jwks.json"

    async def stop(self) -> None:
        """Every service started, last first, each after its client."""
        await self._running.aclose()

    async def sql(self, service: str = "orders") -> asyncpg.Connection:
        return await asyncpg.connect(self.db.dsn(service), server_settings={"search_path": service})

    async def member(self) -> dict[str, str]:
        """A new member; returns `id` and the `Authorization` header value."""
        assert self.membership is not None
        email = f"m{uuid.uuid4().hex[:12]}@example.cn"
        registered = await self.membership.post("/v1/members", json={
            "email": email, "password": PASSWORD, "name": "Li Lei", "birth_year": 1990,
            "region": "CN-SH", "gender": "male"})
        assert registered.status_code == 201, registered.text
        token = await self.membership.post(
            "/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
        return {"id": registered.json()["id"],
                "Authorization": f"Bearer {token.json()['access_token']}"}


@contextlib.asynccontextmanager
async def stack(db: FreshDb, nats_url: str, tmp: Path) -> AsyncIterator[Stack]:
    running = Stack(db=db, nats_url=nats_url, tmp=tmp, payments_grpc_port=free_port())
    try:
        yield running
    finally:
        await running.stop()
