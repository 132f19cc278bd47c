"""Order events from JetStream: points and tiers change exactly once per fact."""

from __future__ import annotations

import uuid
from typing import Any

from marketplace.membership.v1 import membership_pb2 as pb

from tests.helpers import eventually
from tests.integration.membership.conftest import Running
from tests.integration.membership.factories import (
    bearer,
    credit,
    order_confirmed,
    order_refunded,
    publish,
    register,
    sign_in,
    stream_events,
)

CONFIRMED, REFUNDED = "orders.order.confirmed", "orders.order.refunded"


class Member:
    """A registered member, seen the way the member sees themselves: GET /v1/members/me."""

    def __init__(self, membership: Running, body: dict[str, Any], token: str) -> None:
        self.membership, self.id, self.token = membership, str(body["id"]), token

    @classmethod
    async def create(cls, membership: Running) -> Member:
        body = await register(membership.http)
        return cls(membership, body, (await sign_in(membership.http, body["email"]))[
            "access_token"])

    async def me(self) -> dict[str, Any]:
        response = await self.membership.http.get("/v1/members/me", headers=bearer(self.token))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_for(self, **expected: Any) -> dict[str, Any]:
        def matches(me: dict[str, Any]) -> bool:
            return all(me[k] == v for k, v in expected.items())

        return await eventually(self.me, until=matches, what=f"member {expected}")

    async def ledger(self) -> list[tuple[str, int, int]]:
        response = await self.membership.http.get(
            "/v1/members/me/points", params={"limit": 100}, headers=bearer(self.token))
        return [(e["reason"], e["delta"], e["balance_after"]) for e in response.json()["items"]]


async def test_the_same_event_published_twice_credits_once(membership: Running) -> None:
    member = await Member.create(membership)
    event_id = uuid.uuid4()
    order = order_confirmed(member.id, 123_456)

    await publish(membership.bus, CONFIRMED, order, event_id=event_id)
    await publish(membership.bus, CONFIRMED, order, event_id=event_id)  # JetStream dedupes
    await publish(membership.bus, CONFIRMED, order_confirmed(member.id, 10_000))  # a marker

    me = await member.wait_for(points_balance=1234 + 100)
    assert me["lifetime_spend"] == {"amount": 133_456, "currency": "CNY"}
    assert await member.ledger() == [("earn", 100, 1334), ("earn", 1234, 1234)]


async def test_a_redelivered_event_id_is_applied_once(membership: Running) -> None:
    member = await Member.create(membership)
    event_id = uuid.uuid4()
    order = order_confirmed(member.id, 50_000)
    consumer = membership.service.infra.consumers[0]

    # Same ce-id, different Nats-Msg-Id: JetStream delivers both, the inbox must skip one.
    await publish(membership.bus, CONFIRMED, order, event_id=event_id, msg_id=str(uuid.uuid4()))
    await publish(membership.bus, CONFIRMED, order, event_id=event_id, msg_id=str(uuid.uuid4()))
    await eventually(lambda: _duplicates(consumer), until=lambda n: n >= 1,
                     what="the duplicate skipped")

    me = await member.wait_for(points_balance=500)
    assert me["lifetime_spend"]["amount"] == 50_000
    assert await member.ledger() == [("earn", 500, 500)]


async def _duplicates(consumer: Any) -> int:
    return int(consumer.duplicates_total)


async def test_the_same_order_under_a_new_event_id_is_applied_once(membership: Running) -> None:
    member = await Member.create(membership)
    order = order_confirmed(member.id, 20_000)

    await publish(membership.bus, CONFIRMED, order)
    await publish(membership.bus, CONFIRMED, order)  # a new event id, the same order
    await publish(membership.bus, CONFIRMED, order_confirmed(member.id, 100))

    me = await member.wait_for(points_balance=201)
    assert me["lifetime_spend"]["amount"] == 20_100


async def test_points_use_the_tier_before_the_order_and_a_refund_drops_the_tier(
    membership: Running,
) -> None:
    member = await Member.create(membership)
    big, small = order_confirmed(member.id, 1_200_000), order_confirmed(member.id, 100_000)

    await publish(membership.bus, CONFIRMED, big)  # BRONZE → GOLD, earned at BRONZE's 1x
    await member.wait_for(tier="GOLD", points_balance=12_000)
    await publish(membership.bus, CONFIRMED, small)  # earned at GOLD's 1.5x
    await member.wait_for(points_balance=13_500)
    await publish(membership.bus, REFUNDED, order_refunded(member.id, big.order_id, 1_200_000))

    me = await member.wait_for(tier="BRONZE", points_balance=1_500)
    assert me["lifetime_spend"]["amount"] == 100_000
    assert await member.ledger() == [
        ("reverse", -12_000, 1_500), ("earn", 1_500, 13_500), ("earn", 12_000, 12_000)]
    tiers = await eventually(
        lambda: stream_events(membership.bus, "membership.tier.changed"),
        until=lambda found: len(found) == 2, what="two tier changes")
    assert [(m.member_id, m.old_tier, m.new_tier) for _, m in tiers] == [
        (member.id, "BRONZE", "GOLD"), (member.id, "GOLD", "BRONZE")]
    points = await eventually(
        lambda: stream_events(membership.bus, "membership.points.changed"),
        until=lambda found: len(found) == 3, what="three points changes")
    assert [(m.delta, m.balance, m.reason, m.order_id) for _, m in points] == [
        (12_000, 12_000, "earn", big.order_id), (1_500, 13_500, "earn", small.order_id),
        (-12_000, 1_500, "reverse", big.order_id)]


async def test_a_refund_restores_redeemed_points_and_is_applied_once(membership: Running) -> None:
    member = await Member.create(membership)
    await credit(membership, member.id, 800)
    order = order_confirmed(member.id, 40_000)
    await membership.stub.ReservePoints(pb.ReservePointsRequest(
        order_id=order.order_id, member_id=member.id, points=300))
    await membership.stub.CommitPoints(pb.PointsReservationRef(order_id=order.order_id))
    await publish(membership.bus, CONFIRMED, order)
    await member.wait_for(points_balance=800 - 300 + 400)

    refund = order_refunded(member.id, order.order_id, 40_000)
    await publish(membership.bus, REFUNDED, refund)
    await publish(membership.bus, REFUNDED, refund)  # a second refund event for the order
    await publish(membership.bus, CONFIRMED, order_confirmed(member.id, 100))  # a marker

    me = await member.wait_for(points_balance=800 + 1)
    assert me["lifetime_spend"]["amount"] == 80_000 + 100
    reasons = [(reason, delta) for reason, delta, _ in await member.ledger()]
    assert reasons == [("earn", 1), ("reverse", -400), ("restore", 300), ("earn", 400),
                       ("redeem", -300), ("earn", 800)]


async def test_the_points_ledger_pages_with_a_cursor(membership: Running) -> None:
    member = await Member.create(membership)
    for points in (1, 2, 3):
        await credit(membership, member.id, points)
    url, headers = "/v1/members/me/points", bearer(member.token)

    first = (await membership.http.get(url, params={"limit": 2}, headers=headers)).json()
    second = (await membership.http.get(
        url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers)).json()
    bad = await membership.http.get(url, params={"cursor": "bm9wZQ"}, headers=headers)

    assert [e["delta"] for e in first["items"]] == [3, 2]
    assert [e["delta"] for e in second["items"]] == [1]
    assert second["next_cursor"] is None
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["cursor"]


async def test_an_order_of_an_unknown_member_is_retried_then_dead_lettered_alone(
    membership: Running,
) -> None:
    """`loyalty.NotYetApplicable` fails the whole optimistic batch; the per-event fallback
    naks only that event and applies its neighbours, once, until it is dead-lettered."""
    member = await Member.create(membership)
    consumer = membership.service.infra.consumers[0]
    unknown = uuid.uuid4()

    await publish(membership.bus, CONFIRMED, order_confirmed(str(uuid.uuid4()), 70_000),
                  event_id=unknown)
    await publish(membership.bus, CONFIRMED, order_confirmed(member.id, 50_000))

    await member.wait_for(points_balance=500)
    dead = await eventually(
        lambda: membership.service.infra.pool.fetchrow(
            "SELECT event_id, deliveries, error FROM dead_letter"),
        until=lambda row: row is not None, timeout_s=60, what="the unknown member's order")
    assert dead["event_id"] == unknown
    assert dead["deliveries"] == consumer.max_deliver
    assert "NotYetApplicable" in dead["error"]
    assert consumer.fallbacks_total == consumer.max_deliver  # each of its deliveries fell back
    assert await member.ledger() == [("earn", 500, 500)]
    assert (await member.me())["lifetime_spend"]["amount"] == 50_000
