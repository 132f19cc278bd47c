"""Run the payments service in-process on free ports, with a tiny JWKS server for tokens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jwt
import nats
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc import aio
from marketplace.common.v1 import money_pb2
from marketplace.payments.v1 import payments_pb2 as pb
from marketplace.payments.v1 import payments_pb2_grpc

from services.common import auth, grpcutil, runtime
from services.common.events import Event
from services.common.inbox import to_event
from services.payments import bootstrap
from services.payments.api.deps import ApiContext
from services.payments.breaker import CircuitBreaker
from services.payments.processor import CardProcessor
from services.payments.settings import PaymentsSettings
from tests.helpers import eventually, reset_streams
from tests.infra import FreshDb, free_port
from tests.integration.inprocess import run_in_process

SECRET = "test-internal-secret-0123456789"
ADMIN_KEY = "test-admin-key-0123456789"


class TokenIssuer:
    """Signs member access tokens the way membership does, and serves the JWKS over HTTP."""

    def __init__(self) -> None:
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA"}
        self._body = orjson.dumps({"keys": [jwk]})
        self._server: asyncio.Server | None = None
        self.url = ""

    def token(self, member_id: uuid.UUID, tier: str = "BRONZE") -> str:
        now = int(time.time())
        claims = {
            "sub": str(member_id), "typ": "access", "tier": tier, "iat": now, "exp": now + 600,
            "iss": auth.ISSUER, "aud": auth.AUDIENCE,
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def bearer(self, member_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(member_id)}"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(self._body)}\r\n\r\n".encode() + self._body
            )
            await writer.drain()
        writer.close()

    async def start(self) -> None:
        port = free_port()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Running:
    """A payments service under test and the clients that talk to it."""

    svc: runtime.Service[ApiContext]
    settings: PaymentsSettings
    db: FreshDb
    stub: payments_pb2_grpc.PaymentServiceStub
    http: httpx.AsyncClient
    issuer: TokenIssuer
    nats_url: str

    @property
    def breaker(self) -> CircuitBreaker:
        return self.svc.context.payments.gateway.breaker

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Read with the service's own role, bypassing the service."""
        conn = await asyncpg.connect(self.db.dsn("payments"), server_settings={
            "search_path": "payments"})
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def running_payments(
    db: FreshDb, nats_url: str, *, processor: CardProcessor | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    """Start the service on free ports; stop it (and its clients) afterwards.

    `processor` replaces the simulated card processor (the outside world, not our code)."""
    await reset_streams(nats_url)
    issuer = TokenIssuer()
    async with contextlib.AsyncExitStack() as running:
        await issuer.start()
        running.push_async_callback(issuer.stop)
        settings = PaymentsSettings(**{
            "database_url": db.dsn("payments"), "nats_url": nats_url, "http_port": free_port(),
            "grpc_port": free_port(), "internal_auth_secret": SECRET, "environment": "test",
            "admin_api_key": ADMIN_KEY, "jwks_url": issuer.url, "db_pool_max": 10, **overrides,
        })
        svc = await running.enter_async_context(
            run_in_process(bootstrap.start, settings, processor=processor))
        channel = grpcutil.channel(
            f"127.0.0.1:{settings.grpc_port}", service="orders", secret=SECRET, timeout_s=10.0)
        running.push_async_callback(channel.close)
        http = await running.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}"))
        yield Running(svc, settings, db, payments_pb2_grpc.PaymentServiceStub(channel), http,
                      issuer, nats_url)


async def rpc_error(call: Any) -> aio.AioRpcError:
    """The error a gRPC call ends with (fails the test if it succeeds)."""
    with pytest.raises(aio.AioRpcError) as err:
        await call
    return err.value


def authorize_request(
    *, key: str | None = None, order_id: uuid.UUID | None = None,
    member_id: uuid.UUID | None = None, merchant_id: uuid.UUID | None = None,
    amount: int = 10_000, token: str = "tok_visa", capture_key: str = "",
) -> pb.AuthorizeRequest:
    """An Authorize; with `capture_key`, a sale (captured at once under that key)."""
    order_id = order_id or uuid.uuid4()
    return pb.AuthorizeRequest(
        idempotency_key=f"auth-{order_id}" if key is None else key, order_id=str(order_id),
        member_id=str(member_id or uuid.uuid4()), merchant_id=str(merchant_id or uuid.uuid4()),
        amount=money_pb2.Money(amount=amount, currency="CNY"), payment_token=token,
        capture_idempotency_key=capture_key,
    )


async def read_events(nats_url: str, *, count: int, subject: str = "payments.>") -> list[Event]:
    """The first `count` events on the PAYMENTS stream, read with an ephemeral consumer."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(subject, stream="PAYMENTS")
        seen: list[Event] = []

        async def probe() -> int:
            try:
                msgs = await sub.fetch(count - len(seen), timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                return len(seen)
            for msg in msgs:
                seen.append(to_event(msg))
                await msg.ack()
            return len(seen)

        await eventually(probe, until=lambda n: n >= count, what=f"{count} payment events")
        return seen
    finally:
        await nc.close()


async def ledger_totals(run: Running) -> dict[str, int]:
    """Balance per account (sum of its lines)."""
    rows = await run.sql("SELECT account, sum(amount)::bigint AS total FROM journal_lines "
                         "GROUP BY account")
    return {r["account"]: int(r["total"]) for r in rows}


async def unbalanced_entries(run: Running) -> list[asyncpg.Record]:
    return await run.sql(
        "SELECT e.id, coalesce(sum(l.amount), 0) AS total FROM journal_entries e "
        "LEFT JOIN journal_lines l ON l.entry_id = e.id GROUP BY e.id "
        "HAVING coalesce(sum(l.amount), 0) <> 0 OR count(l.id) < 2"
    )
