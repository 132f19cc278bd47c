"""grpc.health.v1 and server reflection on every gRPC server, as grpc-health-probe, grpcurl,
Kubernetes' gRPC probes and meshes call them: with the official clients, without a service
identity, on the real services' ports."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from marketplace.membership.v1 import membership_pb2 as mpb
from marketplace.membership.v1 import membership_pb2_grpc as mgrpc
from marketplace.payments.v1 import payments_pb2 as ppb
from marketplace.payments.v1 import payments_pb2_grpc as pgrpc

from services.common import grpcutil, runtime
from services.membership import bootstrap as membership_bootstrap
from services.membership import rpc as membership_rpc
from services.membership.settings import MembershipSettings
from services.payments import bootstrap as payments_bootstrap
from services.payments import rpc as payments_rpc
from services.payments.settings import PaymentsSettings
from tests.helpers import eventually, reset_streams
from tests.infra import FreshDb, free_port
from tests.integration.inprocess import run_in_process
from tests.integration.membership.conftest import write_key
from tests.integration.payments.harness import ADMIN_KEY, SECRET, TokenIssuer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class GrpcService:
    name: str  # the full name health answers for, e.g. marketplace.payments.v1.PaymentService
    target: str
    # One of the service's own methods, called on `channel` with no identity.
    call_without_identity: Callable[[aio.Channel], Awaitable[object]]


def payments_settings(db: FreshDb, nats_url: str, jwks_url: str, **extra: Any
                      ) -> PaymentsSettings:
    fields: dict[str, Any] = {
        "database_url": db.dsn("payments"), "nats_url": nats_url, "http_port": free_port(),
        "grpc_port": free_port(), "internal_auth_secret": SECRET, "environment": "test",
        "admin_api_key": ADMIN_KEY, "jwks_url": jwks_url, "db_pool_max": 4,
    }
    return PaymentsSettings(**(fields | extra))


@contextlib.asynccontextmanager
async def jwks() -> AsyncIterator[str]:
    issuer = TokenIssuer()
    await issuer.start()
    try:
        yield issuer.url
    finally:
        await issuer.stop()


@pytest.fixture(params=["payments", "membership"])
async def service(request: pytest.FixtureRequest, fresh_db, nats_url: str, tmp_path: Path
                  ) -> AsyncIterator[GrpcService]:
    """payments or membership, started as its process starts it (bootstrap + serve)."""
    await reset_streams(nats_url)
    db: FreshDb = await fresh_db(request.param)
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "payments":
            url = await stack.enter_async_context(jwks())
            settings = payments_settings(db, nats_url, url)
            await stack.enter_async_context(run_in_process(payments_bootstrap.start, settings))

            def call(channel: aio.Channel) -> Awaitable[object]:
                return pgrpc.PaymentServiceStub(channel).GetPayment(
                    ppb.GetPaymentRequest(order_id=str(uuid.uuid4())), timeout=10)

            yield GrpcService(payments_rpc.SERVICE, f"127.0.0.1:{settings.grpc_port}", call)
        else:
            write_key(tmp_path / "signing.pem")
            fields: dict[str, Any] = {
                "database_url": db.dsn("membership"), "nats_url": nats_url,
                "http_port": free_port(), "grpc_port": free_port(),
                "internal_auth_secret": SECRET, "environment": "test",
                "jwt_private_key_file": tmp_path / "signing.pem", "db_pool_max": 4,
            }
            m_settings = MembershipSettings(**fields)
            await stack.enter_async_context(
                run_in_process(membership_bootstrap.start, m_settings))

            def call(channel: aio.Channel) -> Awaitable[object]:
                return mgrpc.MembershipServiceStub(channel).GetMember(
                    mpb.GetMemberRequest(member_id=str(uuid.uuid4())), timeout=10)

            yield GrpcService(membership_rpc.SERVICE, f"127.0.0.1:{m_settings.grpc_port}", call)


@pytest.fixture
async def anonymous() -> AsyncIterator[Callable[[str], aio.Channel]]:
    """Plain channels, as a probe or grpcurl opens them: no identity, no interceptor."""
    channels: list[aio.Channel] = []

    def open_channel(target: str) -> aio.Channel:
        channels.append(aio.insecure_channel(target))
        return channels[-1]

    yield open_channel
    for channel in channels:
        await channel.close()


async def check(channel: aio.Channel, name: str) -> health_pb2.HealthCheckResponse.ServingStatus:
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=10)
    return answer.status


def reflected(target: str, service: str) -> tuple[list[str], list[str]]:
    """What `grpcurl list` and `grpcurl describe <service>` read: the services reflection
    lists and the methods of `service`, resolved from the descriptors the server sends.
    (The official client is synchronous; the caller runs it in a thread, the server being
    on its event loop.)"""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        methods = [m.name for m in pool.FindServiceByName(service).methods]
        return services, methods


async def test_health_answers_for_the_server_and_for_its_service_without_an_identity(
    service: GrpcService, anonymous
) -> None:
    channel = anonymous(service.target)

    assert await check(channel, "") == SERVING
    assert await check(channel, service.name) == SERVING
    with pytest.raises(aio.AioRpcError) as unknown:
        await check(channel, "marketplace.nothing.v1.NoSuchService")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_services_without_an_identity(
    service: GrpcService,
) -> None:
    services, methods = await asyncio.to_thread(reflected, service.target, service.name)

    assert set(services) == {service.name, "grpc.health.v1.Health",
                             "grpc.reflection.v1alpha.ServerReflection"}
    expected = (payments_rpc.METHODS if service.name == payments_rpc.SERVICE
                else membership_rpc.ALLOWED_CALLERS["orders"])
    assert set(methods) >= set(expected)


async def test_the_service_itself_still_refuses_a_caller_without_an_identity(
    service: GrpcService, anonymous
) -> None:
    channel = anonymous(service.target)
    assert await check(channel, service.name) == SERVING  # the same channel gets health

    with pytest.raises(aio.AioRpcError) as refused:
        await service.call_without_identity(channel)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_turns_not_serving_the_moment_draining_starts_while_calls_still_work(
    fresh_db, nats_url: str, anonymous
) -> None:
    """SIGTERM (here: `stop`) starts the drain: gRPC health says NOT_SERVING as /readyz says
    503, for the whole drain, while both servers still answer calls."""
    await reset_streams(nats_url)
    db: FreshDb = await fresh_db("payments")
    async with jwks() as url:
        # A drain far longer than the test: it is cut short by cancelling serve() below.
        settings = payments_settings(db, nats_url, url, drain_s=60)
        started = await payments_bootstrap.start(settings)
        started.infra.bus.nc.options["drain_timeout"] = 2  # as run_in_process does
        stop = asyncio.Event()
        serving = asyncio.create_task(runtime.serve(started, stop=stop))
        target = f"127.0.0.1:{settings.grpc_port}"
        probe = anonymous(target)
        identified = grpcutil.channel(target, service="orders", secret=SECRET, timeout_s=10)
        try:
            await eventually(lambda: check(probe, payments_rpc.SERVICE),
                             until=lambda status: status == SERVING, what="payments SERVING")
            watch = health_pb2_grpc.HealthStub(probe).Watch(
                health_pb2.HealthCheckRequest(service=payments_rpc.SERVICE), timeout=60)
            assert (await watch.read()).status == SERVING

            stop.set()

            assert (await watch.read()).status == NOT_SERVING
            watch.cancel()
            assert await check(probe, "") == NOT_SERVING
            assert await check(probe, payments_rpc.SERVICE) == NOT_SERVING
            async with httpx.AsyncClient(timeout=10) as http:
                ready = await http.get(f"http://127.0.0.1:{settings.http_port}/readyz")
            assert ready.status_code == 503
            assert ready.json()["draining"]["ok"] is False
            # Still serving while it drains: a call is answered, not refused as UNAVAILABLE.
            stub = pgrpc.PaymentServiceStub(identified)
            with pytest.raises(aio.AioRpcError) as unknown:
                await stub.GetPayment(ppb.GetPaymentRequest(order_id=str(uuid.uuid4())))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await identified.close()
            stop.set()
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
    assert started.infra.pool.is_closing()
