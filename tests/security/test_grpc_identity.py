"""gRPC: identity, per-method permission and message size, against the real ports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from gen.marketplace.membership.v1 import membership_pb2 as mpb
from gen.marketplace.membership.v1 import membership_pb2_grpc as mgrpc
from gen.marketplace.payments.v1 import payments_pb2 as ppb
from gen.marketplace.payments.v1 import payments_pb2_grpc as pgrpc
from services.common import grpcutil
from tests.faults.harness import ServiceStack

BIG = 2 * grpcutil.MAX_MESSAGE_BYTES


def secret(stack: ServiceStack) -> str:
    return stack.secrets.internal_auth_secret


def metadata(service: str, token: str) -> tuple[tuple[str, str], ...]:
    return ((grpcutil.IDENTITY_HEADER, service), (grpcutil.TOKEN_HEADER, token))


@pytest.fixture
async def raw() -> AsyncIterator[dict[str, aio.Channel]]:
    """Channels with no identity interceptor and a send limit above the server's."""
    channels: dict[str, aio.Channel] = {}

    def make(target: str) -> aio.Channel:
        channels[target] = aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 4 * BIG)]
        )
        return channels[target]

    yield make  # type: ignore[misc]
    for channel in channels.values():
        await channel.close()


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_payments_without_identity_is_unauthenticated(stack: ServiceStack, raw) -> None:
    stub = pgrpc.PaymentServiceStub(raw(stack.grpc_target("payments")))
    request = ppb.GetPaymentRequest(order_id=str(uuid.uuid4()))
    assert await code_of(stub.GetPayment(request, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_forged_token_is_unauthenticated(stack: ServiceStack, raw) -> None:
    stub = mgrpc.MembershipServiceStub(raw(stack.grpc_target("membership")))
    request = mpb.GetMemberRequest(member_id=str(uuid.uuid4()))
    forged = grpcutil.service_token("not-the-internal-secret-at-all", "orders")
    call = stub.GetMember(request, timeout=5, metadata=metadata("orders", forged))
    assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("caller", ["analytics", "payments"])
async def test_a_service_not_allowed_on_membership_is_refused(
    stack: ServiceStack, raw, caller: str
) -> None:
    """Only orders may call membership: another service proves who it is, then is refused."""
    stub = mgrpc.MembershipServiceStub(raw(stack.grpc_target("membership")))
    token = grpcutil.service_token(secret(stack), caller)
    call = stub.GetMember(
        mpb.GetMemberRequest(member_id=str(uuid.uuid4())), timeout=5,
        metadata=metadata(caller, token),
    )  # fmt: skip
    assert await code_of(call) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_method_outside_the_allow_list_is_permission_denied(stack: ServiceStack) -> None:
    """The interceptor itself, on a real port: orders may call GetMember only."""
    server = grpcutil.server(secret(stack), {"orders": {"GetMember"}})
    servicer = mgrpc.MembershipServiceServicer()
    mgrpc.add_MembershipServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpcutil.channel(f"127.0.0.1:{port}", service="orders", secret=secret(stack))
    try:
        stub = mgrpc.MembershipServiceStub(channel)
        ref = mpb.PointsReservationRef()
        assert await code_of(stub.CommitPoints(ref)) == grpc.StatusCode.PERMISSION_DENIED
        # Allowed, so it reaches the (unimplemented) servicer: the gate let it through.
        member = mpb.GetMemberRequest(member_id=str(uuid.uuid4()))
        assert await code_of(stub.GetMember(member)) == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await channel.close()
        await server.stop(grace=None)


async def test_an_oversized_message_is_refused(stack: ServiceStack, raw) -> None:
    stub = pgrpc.PaymentServiceStub(raw(stack.grpc_target("payments")))
    token = grpcutil.service_token(secret(stack), "orders")
    request = ppb.AuthorizeRequest(idempotency_key="k" * BIG, order_id=str(uuid.uuid4()))
    call = stub.Authorize(request, timeout=5, metadata=metadata("orders", token))
    assert await code_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
