"""gRPC MembershipService on a real port: tiers, and points held, spent and given back."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from marketplace.membership.v1 import membership_pb2 as pb
from marketplace.membership.v1 import membership_pb2_grpc as pb_grpc

from services.common import grpcutil
from tests.integration.membership.conftest import SECRET, Running
from tests.integration.membership.factories import bearer, credit, register, sign_in

RESERVED = pb.RESERVATION_STATUS_RESERVED
COMMITTED = pb.RESERVATION_STATUS_COMMITTED
RELEASED = pb.RESERVATION_STATUS_RELEASED


async def _member_with_points(membership: Running, points: int) -> str:
    member_id = str((await register(membership.http))["id"])
    await credit(membership, member_id, points)
    return member_id


async def _reserve(membership: Running, member_id: str, points: int,
                   order_id: str | None = None) -> pb.PointsReservation:
    return await membership.stub.ReservePoints(pb.ReservePointsRequest(
        order_id=order_id or str(uuid.uuid4()), member_id=member_id, points=points))


async def _ledger(membership: Running) -> tuple[int, int, int]:
    """(sum of ledger deltas, sum of balances, sum of held) across all members."""
    async with membership.service.infra.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT coalesce(sum(delta), 0) FROM points_ledger) AS ledger, "
            "coalesce(sum(points_balance), 0) AS balance, coalesce(sum(points_held), 0) AS held "
            "FROM members"
        )
    return int(row["ledger"]), int(row["balance"]), int(row["held"])


async def test_get_member_gives_tier_discount_and_balance(membership: Running) -> None:
    member_id = await _member_with_points(membership, 1500)

    member = await membership.stub.GetMember(pb.GetMemberRequest(member_id=member_id))

    assert (member.id, member.tier, member.discount_bps, member.points_balance) == (
        member_id, pb.TIER_BRONZE, 0, 1500)


async def test_get_member_of_an_unknown_id_is_not_found(membership: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await membership.stub.GetMember(pb.GetMemberRequest(member_id=str(uuid.uuid4())))
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await membership.stub.GetMember(pb.GetMemberRequest(member_id="42"))

    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_orders_may_call(membership: Running) -> None:
    port = membership.settings.grpc_port
    async with grpcutil.channel(f"127.0.0.1:{port}", service="payments", secret=SECRET) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.MembershipServiceStub(ch).GetMember(
                pb.GetMemberRequest(member_id=str(uuid.uuid4())))

    # payments proves who it is, but only orders may call membership.
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_reserve_then_commit_spends_the_points_once(membership: Running) -> None:
    member_id = await _member_with_points(membership, 1000)
    order_id = str(uuid.uuid4())

    reserved = await _reserve(membership, member_id, 300, order_id)
    replayed = await _reserve(membership, member_id, 300, order_id)
    committed = await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=order_id))
    recommitted = await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=order_id))

    assert (reserved.status, reserved.points, reserved.points_balance) == (RESERVED, 300, 1000)
    assert (replayed.status, replayed.points) == (RESERVED, 300)
    assert (committed.status, committed.points_balance) == (COMMITTED, 700)
    assert (recommitted.status, recommitted.points_balance) == (COMMITTED, 700)
    assert await _ledger(membership) == (700, 700, 0)
    tokens = await sign_in(membership.http, (await _email(membership, member_id)))
    page = (await membership.http.get("/v1/members/me/points",
                                      headers=bearer(tokens["access_token"]))).json()
    assert [(e["reason"], e["delta"], e["balance_after"]) for e in page["items"]] == [
        ("redeem", -300, 700), ("earn", 1000, 1000)]


async def _email(membership: Running, member_id: str) -> str:
    async with membership.service.infra.pool.acquire() as conn:
        return str(await conn.fetchval("SELECT email FROM members WHERE id = $1",
                                       uuid.UUID(member_id)))


async def test_release_gives_the_hold_back_and_blocks_a_commit(membership: Running) -> None:
    member_id = await _member_with_points(membership, 500)
    order_id = str(uuid.uuid4())
    await _reserve(membership, member_id, 400, order_id)
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await _reserve(membership, member_id, 200)

    released = await membership.stub.ReleasePoints(pb.PointsReservationRef(order_id=order_id))
    again = await membership.stub.ReleasePoints(pb.PointsReservationRef(order_id=order_id))
    with pytest.raises(grpc.aio.AioRpcError) as late_commit:
        await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=order_id))
    afterwards = await _reserve(membership, member_id, 500)

    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient points" in (short.value.details() or "")
    assert (released.status, again.status, released.points_balance) == (RELEASED, RELEASED, 500)
    assert late_commit.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert afterwards.status == RESERVED


async def test_committed_points_cannot_be_released(membership: Running) -> None:
    member_id = await _member_with_points(membership, 100)
    order_id = str(uuid.uuid4())
    await _reserve(membership, member_id, 100, order_id)
    await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=order_id))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await membership.stub.ReleasePoints(pb.PointsReservationRef(order_id=order_id))

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await _ledger(membership) == (0, 0, 0)


async def test_a_release_before_the_reserve_leaves_nothing_held(membership: Running) -> None:
    member_id = await _member_with_points(membership, 100)
    order_id = str(uuid.uuid4())

    released = await membership.stub.ReleasePoints(pb.PointsReservationRef(order_id=order_id))
    late = await _reserve(membership, member_id, 100, order_id)

    assert released.status == RELEASED
    assert (late.status, late.points) == (RELEASED, 0)
    assert await _ledger(membership) == (100, 100, 0)


async def test_reserve_errors(membership: Running) -> None:
    member_id = await _member_with_points(membership, 100)
    order_id = str(uuid.uuid4())
    await _reserve(membership, member_id, 50, order_id)
    cases = {
        grpc.StatusCode.ALREADY_EXISTS: (member_id, 60, order_id),
        grpc.StatusCode.NOT_FOUND: (str(uuid.uuid4()), 10, None),
        grpc.StatusCode.INVALID_ARGUMENT: (member_id, 0, None),
    }
    for code, (who, points, order) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _reserve(membership, who, points, order)
        assert failed.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=str(uuid.uuid4())))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_parallel_reserves_never_overdraw_the_balance(membership: Running) -> None:
    member_id = await _member_with_points(membership, 1000)

    results = await asyncio.gather(
        *(_reserve(membership, member_id, 30) for _ in range(50)), return_exceptions=True
    )

    granted = [r for r in results if isinstance(r, pb.PointsReservation)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(granted) + len(refused) == 50
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for r in refused)
    assert len(granted) == 1000 // 30
    _, balance, held = await _ledger(membership)
    assert balance == 1000
    assert held == 30 * len(granted) <= balance
    member = await membership.stub.GetMember(pb.GetMemberRequest(member_id=member_id))
    assert member.points_balance == 1000
