"""The batched checkout steps with fake stores: who shares a batch, and each its own answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence, Set
from datetime import UTC, datetime, timedelta

import grpc

from services.common.outbox import Pending
from services.orders.clients import Payment, Rejected
from services.orders.domain.order import Line, Order
from services.orders.pipeline import BatchSettings, Known, Lookup, Pipeline
from services.orders.store.placing import Outcome, Placed, Placing
from services.orders.store.settling import Settled, Settling


def _order(member: uuid.UUID | None = None, token: str = "tok_visa") -> Order:
    line = Line(sku_id=uuid.uuid4(), product_id=uuid.uuid4(), merchant_id=uuid.uuid4(),
                category="toys", quantity=1, unit_price=100, line_total=100)
    now = datetime.now(UTC)
    return Order(id=uuid.uuid4(), member_id=member or uuid.uuid4(), status="PENDING",
                 subtotal=100, discount=0, points_redeemed=0, total=100, currency="CNY",
                 payment_token=token, payment_id=None, cancel_reason=None,
                 idempotency_key=uuid.uuid4().hex, payment_deadline=now + timedelta(minutes=5),
                 points_pending=False, created_at=now, lines=(line,))


def _placing(order: Order) -> Placing:
    event = Pending(uuid.uuid4(), "orders.order.placed", str(order.id), b"", {})
    return Placing(order=order, request_hash="h", retry_at=datetime.now(UTC), event=event)


class FakeLookups:
    """Knows `prices` (SKU -> price) and `tiers` (member -> tier); records each batch."""

    def __init__(self, prices: dict[uuid.UUID, int] | None = None,
                 tiers: dict[uuid.UUID, str] | None = None) -> None:
        self.batches: list[int] = []
        self.prices, self.tiers = prices or {}, tiers or {}

    async def look_up(self, batch: Sequence[Lookup]) -> Sequence[Known]:
        self.batches.append(len(batch))
        await asyncio.sleep(0.01)
        return [Known({s: {"price": self.prices[s]} for s in item.sku_ids  # type: ignore[misc]
                       if s in self.prices}, self.tiers.get(item.member_id))
                for item in batch]


class FakePlaces:
    """Places every order but those of a member out of stock."""

    def __init__(self, short: set[uuid.UUID] | None = None) -> None:
        self.batches: list[list[uuid.UUID]] = []
        self.short = short or set()

    async def place(self, batch: Sequence[Placing]) -> Sequence[Placed]:
        self.batches.append([p.order.id for p in batch])
        await asyncio.sleep(0.01)  # a statement's round trip: the next batch gathers
        return [Placed(Outcome.SHORT) if p.order.member_id in self.short
                else Placed(Outcome.PLACED) for p in batch]

    async def place_reserved(self, item: Placing, *, hot: Set[uuid.UUID] | None) -> Placed:
        raise AssertionError("not a bucketed order")


class FakePayments:
    """Captures every card but tok_chargeDeclined."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def authorize_batch(self, orders: Sequence[Order]) -> list[Payment | Exception]:
        self.calls.append(len(orders))
        return [Rejected(grpc.StatusCode.FAILED_PRECONDITION, "card_declined")
                if o.payment_token == "tok_chargeDeclined"
                else Payment(id=str(uuid.uuid4()), order_id=str(o.id)) for o in orders]


class FakeSettles:
    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []

    async def settle(self, batch: Sequence[Settling]) -> Sequence[Settled]:
        self.batches.append([x.order.id for x in batch])
        await asyncio.sleep(0.01)
        return [Settled.DONE for _ in batch]

    async def settle_refilled(self, item: Settling) -> Settled:
        return Settled.DONE


def _pipeline(places: FakePlaces, payments: FakePayments | None = None,
              company: int = 0, window_s: float = 0.0,
              lookups: FakeLookups | None = None, settles: FakeSettles | None = None
              ) -> Pipeline:
    return Pipeline(lookups=lookups or FakeLookups(), places=places,
                    payments=payments or FakePayments(), settles=settles or FakeSettles(),
                    batches=BatchSettings(max_size=8, window_s=window_s, parallel=1),
                    company=lambda: company)


async def test_checkouts_in_flight_together_share_batches_each_with_its_own_outcome() -> None:
    short_member = uuid.uuid4()
    places = FakePlaces(short={short_member})
    pipeline = _pipeline(places)
    orders = [_order() for _ in range(5)] + [_order(short_member)]

    outcomes = await asyncio.gather(*(pipeline.place(_placing(o)) for o in orders))

    assert [o.outcome for o in outcomes] == [Outcome.PLACED] * 5 + [Outcome.SHORT]
    assert [len(b) for b in places.batches] == [6]  # submitted together: one statement


async def test_look_ups_in_flight_together_share_one_read_each_with_its_own_answer() -> None:
    sku, other, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    gold, newcomer = uuid.uuid4(), uuid.uuid4()
    lookups = FakeLookups(prices={sku: 100, other: 250}, tiers={gold: "gold"})
    pipeline = _pipeline(FakePlaces(), lookups=lookups)
    asks = [Lookup((sku,), gold), Lookup((other, unknown), newcomer), Lookup((sku, other), gold)]
    known = await asyncio.gather(*(pipeline.look_up(a) for a in asks))
    assert lookups.batches == [3]  # submitted together: one read for the three
    assert [set(k.skus) for k in known] == [{sku}, {other}, {sku, other}]
    assert [k.tier for k in known] == ["gold", None, "gold"]


async def test_two_orders_of_one_member_never_share_a_placing_batch() -> None:
    places = FakePlaces()
    pipeline = _pipeline(places)
    member = uuid.uuid4()
    orders = [_order(), _order(member), _order(member), _order()]

    await asyncio.gather(*(pipeline.place(_placing(o)) for o in orders))

    by_order = {oid: n for n, batch in enumerate(places.batches) for oid in batch}
    assert by_order[orders[1].id] != by_order[orders[2].id]


async def test_one_order_settled_twice_at_once_never_shares_a_settling_batch() -> None:
    # The checkout and recovery (its grace passed on a slow machine) settle the same order at
    # the same moment: in one statement its lines would be moved twice (held counted down
    # twice), so the later waits for the next batch, where the order is no longer PENDING.
    settles = FakeSettles()
    pipeline = _pipeline(FakePlaces(), settles=settles)
    order, other = _order(), _order()
    done = Settling(order=order, reply_status=201, reply_body=b"", events=())

    await asyncio.gather(pipeline.settle(done), pipeline.settle(done),
                         pipeline.settle(Settling(order=other, reply_status=201, reply_body=b"",
                                                  events=())))

    assert [b.count(order.id) for b in settles.batches] == [1, 1]
    assert sorted(len(b) for b in settles.batches) == [1, 2]


async def test_one_order_paid_twice_at_once_never_shares_a_payment_batch() -> None:
    payments = FakePayments()
    pipeline = _pipeline(FakePlaces(), payments)
    order = _order()

    await asyncio.gather(pipeline.pay(order), pipeline.pay(order), pipeline.pay(_order()))

    assert sorted(payments.calls) == [1, 2]


async def test_a_declined_card_fails_only_its_own_payment() -> None:
    payments = FakePayments()
    pipeline = _pipeline(FakePlaces(), payments)
    orders = [_order(), _order(token="tok_chargeDeclined"), _order()]

    paid = await asyncio.gather(*(pipeline.pay(o) for o in orders), return_exceptions=True)

    assert isinstance(paid[1], Rejected)
    assert [p.order_id for p in (paid[0], paid[2])] == [str(orders[0].id), str(orders[2].id)]
    assert sum(payments.calls) == 3 and len(payments.calls) <= 2


async def test_recovery_retries_never_share_a_payment_batch_with_fresh_checkouts() -> None:
    """A batch is answered when its slowest card is: a fresh checkout must not wait on a
    retry of a card that already failed to answer in time."""
    payments = FakePayments()
    pipeline = _pipeline(FakePlaces(), payments)
    fresh, retries = [_order(), _order()], [_order(token="tok_slow"), _order(token="tok_slow")]

    await asyncio.gather(*(pipeline.pay(o) for o in fresh),
                         *(pipeline.pay(o, retry=True) for o in retries))

    assert sorted(payments.calls) == [2, 2]  # two batches, one of each kind


async def test_a_lone_checkout_never_waits_for_company() -> None:
    places = FakePlaces()
    pipeline = _pipeline(places, company=1, window_s=5.0)

    placed = await asyncio.wait_for(pipeline.place(_placing(_order())), timeout=1.0)

    assert placed.outcome == Outcome.PLACED


async def test_with_others_in_flight_a_batch_waits_its_window_for_them() -> None:
    places = FakePlaces()
    pipeline = _pipeline(places, company=3, window_s=0.05)

    async def later(order: Order) -> Placed:
        await asyncio.sleep(0.01)
        return await pipeline.place(_placing(order))

    await asyncio.gather(pipeline.place(_placing(_order())), later(_order()), later(_order()))

    assert [len(b) for b in places.batches] == [3]


