"""The order consumer's batch path: a run of confirmations costs a fixed handful of
statements, and ends exactly where applying its events one by one would.

Each test fetches the batch itself and hands it to `Consumer.apply`, so which events share
a batch is decided here, not by timing. The reference is the per-event path (the shared
consumer's savepoint per event through `handlers.handle`, i.e. `loyalty.order_confirmed`)
on a database of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import db
from services.common.bus import Bus
from services.common.events import SUBJECTS, envelope_headers
from services.common.migrations import migrate_service
from services.membership import handlers
from services.membership.batch import OrderConsumer
from services.membership.store import members
from tests.helpers import eventually
from tests.infra import FreshDb
from tests.integration.common.test_inbox_batches import RecordingPool
from tests.integration.membership.factories import order_confirmed, order_refunded

CONFIRMED, REFUNDED = "orders.order.confirmed", "orders.order.refunded"
# What one run of confirmations costs, whatever its length (claim, BEGIN/COMMIT aside).
RUN = ["lock members", "insert orders", "insert ledger", "update members", "insert outbox"]


@dataclass
class Membership:
    """Membership's schema and its order consumer on a recording pool of one connection."""

    dsn: str
    pool: asyncpg.Pool
    sent: RecordingPool
    consumer: OrderConsumer

    async def register(self, *member_ids: uuid.UUID) -> None:
        for member_id in member_ids:
            await members.insert(self.pool, member_id=member_id, email=f"{member_id}@example.cn",
                                 password_hash="x", name="Li Lei", birth_year=1990,
                                 region="CN-SH", gender=None)

    async def kinds(self) -> list[str]:
        """The consumer's statements so far, by kind; forgets them."""
        await asyncio.sleep(0)  # asyncpg delivers query logs with call_soon
        kinds = [_kind(s) for s in self.sent.statements]
        self.sent.statements.clear()
        return kinds

    async def one_by_one(self, msgs: list[Msg]) -> None:
        """The reference: the per-event path, without acking."""
        async with self.pool.acquire() as conn:
            await self.consumer.apply_each(conn, msgs)

    async def state(self) -> dict[str, list[Any]]:
        """Members, orders, ledger and outbox as a client or an audit sees them."""
        q = self.pool.fetch
        outbox = [(r["subject"], r["aggregate_id"], _decoded(r["subject"], r["payload"]))
                  for r in await q("SELECT subject, aggregate_id, payload FROM outbox "
                                   "ORDER BY seq")]
        return {
            "members": [tuple(r) for r in await q(
                "SELECT id, tier, lifetime_spend, points_balance FROM members ORDER BY id")],
            "orders": [tuple(r) for r in await q(
                "SELECT order_id, member_id, total, tier_at_order, points_earned, confirmed_at "
                "FROM member_orders ORDER BY order_id")],
            "ledger": [tuple(r) for r in await q(
                "SELECT member_id, order_id, reason, delta, balance_after FROM points_ledger "
                "ORDER BY id")],
            "outbox": outbox,
        }


def _kind(sql: str) -> str:
    sql = " ".join(sql.split())
    if sql.startswith("INSERT INTO inbox"):
        return "claim" if "unnest" in sql else "inbox row"
    if sql.startswith("SELECT") and "FROM members" in sql and "FOR UPDATE" in sql:
        return "lock members"
    for prefix, kind in (("INSERT INTO member_orders", "insert orders"),
                         ("INSERT INTO points_ledger", "insert ledger"),
                         ("UPDATE members", "update members"),
                         ("INSERT INTO outbox", "insert outbox")):
        if sql.startswith(prefix):
            return kind
    return sql.split()[0].rstrip(";").upper()


def _decoded(subject: str, payload: bytes) -> dict[str, Any]:
    message = SUBJECTS[subject]()
    message.ParseFromString(payload)
    if message.DESCRIPTOR.fields_by_name.get("changed_at"):
        message.ClearField("changed_at")  # the time it was applied, not a fact of the order
    found: dict[str, Any] = MessageToDict(message)
    return found


MakeMembership = Callable[[], Awaitable[Membership]]


@pytest.fixture
async def make_membership(fresh_db, bus: Bus) -> AsyncIterator[MakeMembership]:
    pools: list[asyncpg.Pool] = []

    async def make() -> Membership:
        database: FreshDb = await fresh_db("membership")
        await migrate_service(database.dsn("membership"), "membership")
        pool = await db.create_pool(database.dsn("membership"), schema="membership",
                                    application_name="test", min_size=1, max_size=1)
        pools.append(pool)
        # Warmed up: asyncpg looks up an array type on a connection's first use of it, and
        # those lookups are not the consumer's statements.
        await pool.fetchval("SELECT $1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[], "
                            "$5::bytea[], $6::jsonb[]", [], [], [], [], [], [])
        sent = RecordingPool(pool)
        return Membership(database.dsn("membership"), pool, sent, order_consumer(sent, bus))

    yield make
    for pool in pools:
        await pool.close()


def order_consumer(pool: Any, bus: Bus) -> OrderConsumer:
    return OrderConsumer(pool=pool, bus=bus, name=handlers.CONSUMER, stream=handlers.STREAM,
                         subjects=handlers.SUBJECTS, handler=handlers.handle, max_deliver=3)


@pytest.fixture
async def sub(bus: Bus) -> JetStreamContext.PullSubscription:
    """The consumer's durable, to fetch batches from by hand."""
    config = order_consumer(None, bus).config()  # (a durable's configuration needs no pool)
    await bus.js.add_consumer(handlers.STREAM, config=config)
    return await bus.js.pull_subscribe_bind(durable=handlers.CONSUMER, stream=handlers.STREAM)


async def publish(
    bus: Bus, message: Message, *, subject: str = CONFIRMED, event_id: uuid.UUID | None = None
) -> str:
    """Publish as orders' relay would, with a trace of its own; the trace id."""
    event_id = event_id or uuid.uuid4()
    headers = envelope_headers(subject, event_id, "orders")
    headers["Nats-Msg-Id"] = str(uuid.uuid4())  # so that JetStream keeps a repeated event id
    trace_id = uuid.uuid4().hex
    headers["traceparent"] = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    await bus.publish(subject, message.SerializeToString(), headers)
    return trace_id


async def fetch(sub: JetStreamContext.PullSubscription, count: int) -> list[Msg]:
    got: list[Msg] = []
    while len(got) < count:
        got += await sub.fetch(count - len(got), timeout=10)
    return got


async def all_acked(consumer: OrderConsumer) -> None:
    await eventually(consumer.lag, until=lambda lag: lag == 0, what="every message acked")


def ids(n: int) -> list[uuid.UUID]:
    return sorted(uuid.uuid4() for _ in range(n))


async def test_ten_confirmations_of_ten_members_cost_five_statements_and_wake_the_relay(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription
) -> None:
    svc, reference = await make_membership(), await make_membership()
    people = ids(10)
    await svc.register(*people)
    await reference.register(*people)
    notified: list[str] = []
    listener = await asyncpg.connect(svc.dsn)
    await listener.add_listener("outbox_membership", lambda *args: notified.append(args[2]))
    # Among them a member crossing into SILVER and an order too small to earn a point.
    totals = [250_000, 50, *range(10_000, 90_000, 10_000)]
    traces = [await publish(bus, order_confirmed(str(m), t)) for m, t in zip(people, totals,
                                                                            strict=True)]
    msgs = await fetch(sub, 10)

    await svc.consumer.apply(msgs)
    await reference.one_by_one(msgs)

    assert await svc.kinds() == ["BEGIN", "claim", *RUN, "COMMIT"]
    assert svc.consumer.fallbacks_total == 0 and svc.consumer.applied_total == 10
    state = await svc.state()
    assert state == await reference.state()
    assert [(tier, spend, points) for _, tier, spend, points in state["members"]] == [
        ("SILVER", 250_000, 2_500), ("BRONZE", 50, 0),
        *[("BRONZE", t, t // 100) for t in totals[2:]]]
    assert [s for s, _, _ in state["outbox"]].count("membership.tier.changed") == 1
    # Each event continues the trace of the confirmation it answers.
    heads = await svc.pool.fetch("SELECT aggregate_id, headers FROM outbox "
                                 "WHERE subject = 'membership.points.changed' ORDER BY seq")
    by_member = {str(m): t for m, t in zip(people, traces, strict=True)}
    assert [h["headers"]["traceparent"].split("-")[1] for h in heads] == [
        by_member[h["aggregate_id"]] for h in heads]

    async def channel() -> list[str]:
        return notified

    assert await eventually(channel, what="the relay notified") == ["outbox_membership"]
    await listener.close()
    await all_acked(svc.consumer)


async def test_orders_of_one_member_in_one_batch_earn_at_the_tier_each_found(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription
) -> None:
    svc, reference = await make_membership(), await make_membership()
    climber, other = ids(2)
    for m in (svc, reference):
        await m.register(climber, other)
    # BRONZE 1x, BRONZE 1x (→ SILVER), SILVER 1x (→ GOLD), GOLD 1.5x; `other` in between.
    steps = [(climber, 150_000), (other, 30_000), (climber, 100_000), (climber, 800_000),
             (other, 20_000), (climber, 100_000)]
    sent = [order_confirmed(str(m), total) for m, total in steps]
    for message in sent:
        await publish(bus, message)
    msgs = await fetch(sub, len(sent))

    await svc.consumer.apply(msgs)
    await reference.one_by_one(msgs)

    assert await svc.kinds() == ["BEGIN", "claim", *RUN, "COMMIT"]
    state = await svc.state()
    assert state == await reference.state()
    assert state["members"] == sorted([(climber, "GOLD", 1_150_000, 12_000),
                                       (other, "BRONZE", 50_000, 500)])
    assert [(m, o, d, b) for m, o, _, d, b in state["ledger"]] == [
        (climber, uuid.UUID(sent[0].order_id), 1_500, 1_500),
        (other, uuid.UUID(sent[1].order_id), 300, 300),
        (climber, uuid.UUID(sent[2].order_id), 1_000, 2_500),
        (climber, uuid.UUID(sent[3].order_id), 8_000, 10_500),
        (other, uuid.UUID(sent[4].order_id), 200, 500),
        (climber, uuid.UUID(sent[5].order_id), 1_500, 12_000)]
    assert [(o[3], o[4]) for o in state["orders"]] == [
        (tier, points) for _, tier, points in sorted(
            [(sent[0].order_id, "BRONZE", 1_500), (sent[1].order_id, "BRONZE", 300),
             (sent[2].order_id, "BRONZE", 1_000), (sent[3].order_id, "SILVER", 8_000),
             (sent[4].order_id, "BRONZE", 200), (sent[5].order_id, "GOLD", 1_500)],
            key=lambda row: uuid.UUID(row[0]))]
    climbs = [(e["oldTier"], e["newTier"]) for s, _, e in state["outbox"]
              if s == "membership.tier.changed"]
    assert climbs == [("BRONZE", "SILVER"), ("SILVER", "GOLD")]
    assert [s.split(".")[1] for s, _, _ in state["outbox"]] == [
        "points", "points", "points", "tier", "points", "tier", "points", "points"]
    await all_acked(svc.consumer)


async def test_the_per_event_path_earns_at_the_tier_before_an_order_that_lifts_the_member(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription
) -> None:
    svc = await make_membership()
    [member] = ids(1)
    await svc.register(member)
    # BRONZE → SILVER at 1x, then SILVER → GOLD at SILVER's 1x (not GOLD's 1.5x).
    sent = [order_confirmed(str(member), 900_000), order_confirmed(str(member), 200_000)]
    for message in sent:
        await publish(bus, message)

    await svc.one_by_one(await fetch(sub, len(sent)))

    state = await svc.state()
    assert state["members"] == [(member, "GOLD", 1_100_000, 11_000)]
    first, second = (uuid.UUID(m.order_id) for m in sent)
    assert sorted((o[0], o[3], o[4]) for o in state["orders"]) == sorted(
        [(first, "BRONZE", 9_000), (second, "SILVER", 2_000)])
    assert state["ledger"] == [(member, first, "earn", 9_000, 9_000),
                               (member, second, "earn", 2_000, 11_000)]

    def earned(order_id: uuid.UUID, delta: str, balance: str) -> tuple[str, str, dict[str, str]]:
        return ("membership.points.changed", str(member), {
            "memberId": str(member), "delta": delta, "balance": balance, "reason": "earn",
            "orderId": str(order_id)})

    def lifted(old: str, new: str) -> tuple[str, str, dict[str, str]]:
        return ("membership.tier.changed", str(member),
                {"memberId": str(member), "oldTier": old, "newTier": new})

    assert state["outbox"] == [earned(first, "9000", "9000"), lifted("BRONZE", "SILVER"),
                               earned(second, "2000", "11000"), lifted("SILVER", "GOLD")]


# ¥400 earns 400 points; 50 fen earns none, so no ledger entry can refuse a second count.
ONCE = pytest.mark.parametrize("total", [40_000, 50])


@ONCE
async def test_an_order_confirmed_before_under_another_event_id_counts_once(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription,
    total: int,
) -> None:
    svc = await make_membership()
    member, neighbour = ids(2)
    await svc.register(member, neighbour)
    order = order_confirmed(str(member), total)
    await publish(bus, order)
    await svc.consumer.apply(await fetch(sub, 1))

    await publish(bus, order_confirmed(str(neighbour), 10_000))
    await publish(bus, order)  # the same order again, under a new event id
    await publish(bus, order_confirmed(str(member), 5_000))
    await svc.consumer.apply(await fetch(sub, 3))

    assert svc.consumer.fallbacks_total == 1
    assert (svc.consumer.applied_total, svc.consumer.duplicates_total) == (4, 0)
    state = await svc.state()
    assert state["members"] == sorted([(member, "BRONZE", total + 5_000, total // 100 + 50),
                                       (neighbour, "BRONZE", 10_000, 100)])
    assert [(r, d) for m, _, r, d, _ in state["ledger"] if m == member] == [
        ("earn", p) for p in (total // 100, 50) if p]
    assert len(state["orders"]) == 3
    await all_acked(svc.consumer)


@ONCE
async def test_an_order_twice_in_one_batch_counts_once(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription,
    total: int,
) -> None:
    svc = await make_membership()
    member, neighbour = ids(2)
    await svc.register(member, neighbour)
    order = order_confirmed(str(member), total)
    await publish(bus, order)
    await publish(bus, order_confirmed(str(neighbour), 10_000))
    await publish(bus, order)  # a new event id, the same order

    await svc.consumer.apply(await fetch(sub, 3))

    assert svc.consumer.fallbacks_total == 1
    state = await svc.state()
    assert state["members"] == sorted([(member, "BRONZE", total, total // 100),
                                       (neighbour, "BRONZE", 10_000, 100)])
    assert [(m, d) for m, _, _, d, _ in state["ledger"]] == [
        (m, p) for m, p in ((member, total // 100), (neighbour, 100)) if p]
    assert len(state["orders"]) == 2
    await all_acked(svc.consumer)


async def test_an_unknown_member_is_retried_alone_and_the_others_apply(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription
) -> None:
    svc = await make_membership()
    first, late, last = ids(3)
    await svc.register(first, last)
    for m in (first, late, last):
        await publish(bus, order_confirmed(str(m), 20_000))

    await svc.consumer.apply(await fetch(sub, 3))

    assert svc.consumer.fallbacks_total == 1
    assert svc.consumer.last_error is not None and "NotYetApplicable" in svc.consumer.last_error
    assert [(m, s, p) for m, _, s, p in (await svc.state())["members"]] == sorted(
        [(first, 20_000, 200), (last, 20_000, 200)])
    await svc.register(late)  # known now: the redelivery applies, on the batch path
    [again] = await fetch(sub, 1)
    await svc.kinds()
    await svc.consumer.apply([again])

    assert await svc.kinds() == ["BEGIN", "claim", *RUN, "COMMIT"]
    assert (svc.consumer.applied_total, svc.consumer.fallbacks_total) == (3, 1)
    assert [(m, s, p) for m, _, s, p in (await svc.state())["members"]] == sorted(
        [(first, 20_000, 200), (late, 20_000, 200), (last, 20_000, 200)])
    await all_acked(svc.consumer)


async def test_a_refund_between_confirmations_lands_in_its_place(
    make_membership: MakeMembership, bus: Bus, sub: JetStreamContext.PullSubscription
) -> None:
    svc, reference = await make_membership(), await make_membership()
    member, other = ids(2)
    for m in (svc, reference):
        await m.register(member, other)
    big = order_confirmed(str(member), 1_200_000)  # BRONZE → GOLD
    await publish(bus, big)
    await publish(bus, order_confirmed(str(other), 10_000))
    await publish(bus, order_refunded(str(member), big.order_id, 1_200_000, 1_200_000),
                  subject=REFUNDED)  # GOLD → BRONZE
    await publish(bus, order_confirmed(str(member), 100_000))  # at BRONZE's 1x, not GOLD's
    msgs = await fetch(sub, 4)

    await svc.consumer.apply(msgs)
    await reference.one_by_one(msgs)

    kinds = await svc.kinds()
    assert kinds[:2 + len(RUN)] == ["BEGIN", "claim", *RUN]
    assert kinds[-1 - len(RUN):] == [*RUN, "COMMIT"]
    refund = kinds[2 + len(RUN):-1 - len(RUN)]  # between the two runs, on its own
    assert refund and "insert orders" not in refund and "SAVEPOINT" not in refund
    assert svc.consumer.fallbacks_total == 0
    state = await svc.state()
    assert state == await reference.state()
    assert [(r, d, b) for m, _, r, d, b in state["ledger"] if m == member] == [
        ("earn", 12_000, 12_000), ("reverse", -12_000, 0), ("earn", 1_000, 1_000)]
    assert [(m, t, s, p) for m, t, s, p in state["members"] if m == member] == [
        (member, "BRONZE", 100_000, 1_000)]
    await all_acked(svc.consumer)
