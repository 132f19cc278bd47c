"""The tier discount comes from orders' projection of membership's events: a checkout without
points asks membership nothing, a promotion reaches checkout within the event lag, each
order records the tier it was priced with, and points are still held strongly."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1 import events_pb2 as ev

from services.cli.audit import CHECKS, Check
from services.cli.audit_discounts import check_discounts
from services.cli.audit_window import Scope
from services.common.events import envelope_headers
from services.membership.rpc import MembershipServicer
from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack

PROMOTING = 210_000  # ¥2,100: one such order lifts a BRONZE member past SILVER's ¥2,000
CHEAP = 1_000
# ¥1.50 less 70 points leaves under ¥1 to pay, which earns no points: a balance that only
# redemptions move while the checkouts run.
TINY, REDEEM = 150, 70


@pytest.fixture
async def counted(
    services: Stack, monkeypatch: pytest.MonkeyPatch
) -> tuple[Stack, Counter[str]]:
    """All three services, with the calls membership's gRPC server answers counted."""
    calls: Counter[str] = Counter()

    def counting(name: str) -> Callable[..., Awaitable[Any]]:
        original = getattr(MembershipServicer, name)

        async def method(self: MembershipServicer, request: Any, context: Any) -> Any:
            calls[name] += 1
            return await original(self, request, context)
        return method

    for name in ("GetMember", "ReservePoints"):
        monkeypatch.setattr(MembershipServicer, name, counting(name))
    await services.start_membership()
    await services.start_payments()
    # Room for 50 checkouts of one member at once: refusals then come from the points alone.
    await services.start_orders(max_checkouts_in_flight=64, member_checkout_burst=100)
    return services, calls


async def _skus(stack: Stack) -> tuple[f.SkuRow, f.SkuRow, f.SkuRow]:
    conn = await stack.sql()
    try:
        merchant = await f.merchant(conn)
        big, cheap, tiny = await f.product(
            conn, merchant, skus=[(PROMOTING, 5), (CHEAP, 200), (TINY, 100)])
        return big, cheap, tiny
    finally:
        await conn.close()


async def _known_tier(stack: Stack, member_id: str) -> str | None:
    conn = await stack.sql()
    try:
        tier: str | None = await conn.fetchval(
            "SELECT tier FROM member_tiers WHERE member_id = $1", uuid.UUID(member_id))
        return tier
    finally:
        await conn.close()


async def _recorded(stack: Stack, order_id: str) -> tuple[str, int]:
    conn = await stack.sql()
    try:
        row = await conn.fetchrow("SELECT tier, discount_bps FROM orders WHERE id = $1",
                                  uuid.UUID(order_id))
        assert row is not None
        return row["tier"], row["discount_bps"]
    finally:
        await conn.close()


async def _buy(stack: Stack, member: dict[str, str], sku: f.SkuRow, quantity: int,
               points: int = 0) -> Any:
    assert stack.orders is not None
    body = f.order_body((sku.id, quantity)) | ({"points_to_redeem": points} if points else {})
    return await stack.orders.post("/v1/orders", json=body, headers={
        "Authorization": member["Authorization"], "Idempotency-Key": uuid.uuid4().hex})


async def _points(stack: Stack, member: dict[str, str]) -> int:
    assert stack.membership is not None
    me = await stack.membership.get("/v1/members/me",
                                    headers={"Authorization": member["Authorization"]})
    return int(me.json()["points_balance"])


async def test_a_promotion_reaches_checkout_without_a_membership_call_and_is_recorded(
    counted: tuple[Stack, Counter[str]],
) -> None:
    stack, calls = counted
    big, cheap, _ = await _skus(stack)
    member = await stack.member()
    await eventually(lambda: _known_tier(stack, member["id"]), until=lambda t: t == "BRONZE",
                     what="registration in orders' projection")

    first = await _buy(stack, member, big, 1)
    assert first.status_code == 201, first.text
    assert first.json()["discount"]["amount"] == 0
    assert await _recorded(stack, first.json()["id"]) == ("BRONZE", 0)

    # Membership promotes on the confirmation; orders hears of it through the event.
    await eventually(lambda: _known_tier(stack, member["id"]), until=lambda t: t == "SILVER",
                     what="SILVER in orders' projection", timeout_s=30)
    second = await _buy(stack, member, cheap, 10)
    assert second.status_code == 201, second.text
    assert second.json()["discount"]["amount"] == 10 * CHEAP * 200 // 10_000
    assert await _recorded(stack, second.json()["id"]) == ("SILVER", 200)
    assert calls == Counter(), "a checkout without points called membership"

    await eventually(lambda: _points(stack, member), until=lambda p: p >= PROMOTING // 100,
                     what="points earned", timeout_s=30)
    third = await _buy(stack, member, cheap, 10, points=100)
    assert third.status_code == 201, third.text
    assert third.json()["points_redeemed"] == 100
    assert await _recorded(stack, third.json()["id"]) == ("SILVER", 200)
    assert calls["GetMember"] >= 1 and calls["ReservePoints"] >= 1


async def test_fifty_concurrent_checkouts_cannot_overspend_points(
    counted: tuple[Stack, Counter[str]],
) -> None:
    stack, _ = counted
    big, _, tiny = await _skus(stack)
    member = await stack.member()
    assert (await _buy(stack, member, big, 1)).status_code == 201
    balance = await eventually(lambda: _points(stack, member),
                               until=lambda p: p == PROMOTING // 100, what="points earned",
                               timeout_s=30)

    answers = await asyncio.gather(*(_buy(stack, member, tiny, 1, points=REDEEM)
                                     for _ in range(50)))

    codes = Counter(a.status_code for a in answers)
    assert set(codes) <= {201, 202, 402, 409, 422}, {a.status_code: a.text for a in answers}
    assert codes[201] >= 1 and sum(n for c, n in codes.items() if c >= 400) >= 1, codes
    conn = await stack.sql()
    try:
        redeemed = await eventually(lambda: conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending, "
            "coalesce(sum(points_redeemed) FILTER (WHERE status = 'CONFIRMED'), 0) AS points "
            "FROM orders WHERE member_id = $1", uuid.UUID(member["id"])),
            until=lambda r: r["pending"] == 0, what="no order left PENDING", timeout_s=30)
    finally:
        await conn.close()
    assert 0 < redeemed["points"] <= balance
    spent = await stack.sql("membership")
    try:  # membership spent exactly what the confirmed orders redeemed, and no more
        ledger = await eventually(lambda: spent.fetchval(
            "SELECT coalesce(-sum(delta), 0) FROM points_ledger "
            "WHERE member_id = $1 AND reason = 'redeem'", uuid.UUID(member["id"])),
            until=lambda n: n == redeemed["points"], what="redemptions committed")
        assert await spent.fetchval("SELECT points_held FROM members WHERE id = $1",
                                    uuid.UUID(member["id"])) == 0
    finally:
        await spent.close()
    assert ledger <= balance
    assert await _points(stack, member) == balance - ledger


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


async def test_tier_events_out_of_order_keep_the_newest_tier(
    counted: tuple[Stack, Counter[str]],
) -> None:
    stack, _ = counted
    member_id, t0 = str(uuid.uuid4()), datetime.now(UTC)
    # As membership's relay publishes them, but delivered late: the newest change first.
    events = [
        ("membership.tier.changed", ev.TierChanged(
            member_id=member_id, old_tier="SILVER", new_tier="GOLD",
            changed_at=_stamp(t0 + timedelta(seconds=2)))),
        ("membership.member.registered", ev.MemberRegistered(
            member_id=member_id, region="CN-SH", registered_at=_stamp(t0))),
        ("membership.tier.changed", ev.TierChanged(
            member_id=member_id, old_tier="BRONZE", new_tier="SILVER",
            changed_at=_stamp(t0 + timedelta(seconds=1)))),
    ]
    nc = await nats.connect(stack.nats_url)
    try:
        for subject, message in events:
            await nc.jetstream().publish(subject, message.SerializeToString(), headers=(
                envelope_headers(subject, uuid.uuid4(), "membership")))
    finally:
        await nc.close()

    conn = await stack.sql()
    try:
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = 'orders-membership' "
            "AND subject LIKE 'membership.%'"), until=lambda n: n == 3,
            what="the three events applied")
    finally:
        await conn.close()
    assert await _known_tier(stack, member_id) == "GOLD"


async def _audited(stack: Stack, since: datetime | None) -> Check:
    """The audit's discount check, as `marketplace audit` runs it (read-only, as auditor),
    over the whole history or over what changed since `since`."""
    conn = await asyncpg.connect(stack.db.auditor_dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            scope = (Scope.whole() if since is None else
                     await Scope.changed_since(conn, since))
            return await check_discounts(conn, scope)
    finally:
        await conn.close()


@pytest.mark.parametrize("window", [False, True], ids=["full", "since"])
async def test_the_audit_checks_each_discount_against_the_tier_recorded_on_it(
    counted: tuple[Stack, Counter[str]], window: bool,
) -> None:
    stack, _ = counted
    since = datetime.now(UTC) - timedelta(seconds=1) if window else None
    _, cheap, _ = await _skus(stack)
    member = await stack.member()
    placed = await _buy(stack, member, cheap, 3)
    assert placed.status_code == 201, placed.text

    assert check_discounts in CHECKS
    clean = await _audited(stack, since)
    assert clean.ok and clean.checked == 1, clean

    # Priced as BRONZE (no discount), recorded as GOLD: the audit names the order.
    conn = await stack.sql()
    try:
        await conn.execute("UPDATE orders SET tier = 'GOLD', discount_bps = 500 WHERE id = $1",
                           uuid.UUID(placed.json()["id"]))
    finally:
        await conn.close()
    flagged = await _audited(stack, since)
    assert [placed.json()["id"] in v for v in flagged.violations] == [True], flagged
