"""Partial refunds: spend and earned points follow the running refund; redeemed points come
back only once the order is refunded in full; duplicates and stale events change nothing."""

from __future__ import annotations

from marketplace.membership.v1 import membership_pb2 as pb

from tests.integration.membership.conftest import Running
from tests.integration.membership.factories import (
    credit,
    order_confirmed,
    order_refunded,
    publish,
)
from tests.integration.membership.test_order_events import CONFIRMED, REFUNDED, Member

TOTAL = 40_000  # ¥400 at BRONZE: 400 points


async def _order_with_redeemed_points(membership: Running, member: Member) -> str:
    """¥800 of earlier orders (800 points), then an order paying 300 of them and earning 400."""
    await credit(membership, member.id, 800)
    order = order_confirmed(member.id, TOTAL)
    await membership.stub.ReservePoints(pb.ReservePointsRequest(
        order_id=order.order_id, member_id=member.id, points=300))
    await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=order.order_id))
    await publish(membership.bus, CONFIRMED, order)
    await member.wait_for(points_balance=800 - 300 + 400)
    return order.order_id


async def _marker(membership: Running, member: Member, expected_balance: int) -> dict:
    """A ¥1 order published after the events under test: once it shows, they were applied."""
    await publish(membership.bus, CONFIRMED, order_confirmed(member.id, 100))
    return await member.wait_for(points_balance=expected_balance + 1)


async def test_partial_refunds_reverse_points_in_proportion_and_restore_only_in_full(
    membership: Running,
) -> None:
    member = await Member.create(membership)
    order_id = await _order_with_redeemed_points(membership, member)

    await publish(membership.bus, REFUNDED, order_refunded(member.id, order_id, 10_000, 10_000))
    me = await member.wait_for(points_balance=900 - 100)  # a quarter of 400 points
    assert me["lifetime_spend"]["amount"] == 80_000 + TOTAL - 10_000
    # The same running total again (a new event id), then a second refund, then a stale one.
    await publish(membership.bus, REFUNDED, order_refunded(member.id, order_id, 10_000, 10_000))
    await publish(membership.bus, REFUNDED, order_refunded(member.id, order_id, 15_001, 25_001))
    await publish(membership.bus, REFUNDED, order_refunded(member.id, order_id, 10_000, 10_000))
    me = await _marker(membership, member, 800 - 150)  # floor(400 * 25 001 / 40 000) = 250
    assert me["lifetime_spend"]["amount"] == 80_000 + TOTAL - 25_001 + 100

    await publish(membership.bus, REFUNDED,
                  order_refunded(member.id, order_id, TOTAL - 25_001, TOTAL))
    me = await _marker(membership, member, 651 + 300 - 150)

    assert me["lifetime_spend"]["amount"] == 80_000 + 200
    reasons = [(reason, delta) for reason, delta, _ in await member.ledger()]
    assert reasons == [
        ("earn", 1), ("reverse", -150), ("restore", 300), ("earn", 1), ("reverse", -150),
        ("reverse", -100), ("earn", 400), ("redeem", -300), ("earn", 800)]


async def test_a_full_refund_overtaking_a_partial_one_ends_in_the_same_balance(
    membership: Running,
) -> None:
    member = await Member.create(membership)
    order_id = await _order_with_redeemed_points(membership, member)

    await publish(membership.bus, REFUNDED,
                  order_refunded(member.id, order_id, TOTAL - 10_000, TOTAL))
    await publish(membership.bus, REFUNDED, order_refunded(member.id, order_id, 10_000, 10_000))
    me = await _marker(membership, member, 800)

    assert me["lifetime_spend"]["amount"] == 80_000 + 100
    reasons = [(reason, delta) for reason, delta, _ in await member.ledger()]
    assert reasons == [("earn", 1), ("reverse", -400), ("restore", 300), ("earn", 400),
                       ("redeem", -300), ("earn", 800)]


async def test_an_event_without_a_running_total_adds_its_amount(membership: Running) -> None:
    member = await Member.create(membership)
    order = order_confirmed(member.id, TOTAL)
    await publish(membership.bus, CONFIRMED, order)
    await member.wait_for(points_balance=400)

    await publish(membership.bus, REFUNDED, order_refunded(member.id, order.order_id, 20_000))
    me = await _marker(membership, member, 200)

    assert me["lifetime_spend"]["amount"] == TOTAL - 20_000 + 100
