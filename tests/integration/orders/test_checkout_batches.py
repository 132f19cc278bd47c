"""Checkout's two writes, one statement per batch each: placing PENDING orders, settling
them CONFIRMED or CANCELLED. Each order gets its own outcome; a neighbour's refusal changes
nothing of it. The same cases run through the transaction a bucketed SKU takes."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from marketplace.events.v1 import events_pb2 as ev

from services.common import db, outbox
from services.common.migrations import migrate_service
from services.common.ratelimit import Rate, SharedLimit
from services.orders.domain.order import CancelReason, Line, Order
from services.orders.store import carts, placing, settling, stock
from services.orders.store.placing import Outcome, Placing
from services.orders.store.settling import Settled, Settling
from tests.infra import FreshDb
from tests.integration.orders import factories as f

# The per-member checkout rate: 2 at once, then one every 100 s.
RATE = SharedLimit("checkout-member", Rate(2, timedelta(seconds=100)))


@pytest.fixture
async def conn(fresh_db: object) -> AsyncIterator[asyncpg.Connection]:
    database: FreshDb = await fresh_db("orders")  # type: ignore[operator]
    await migrate_service(database.dsn("orders"), "orders")
    connection = await db.connect(database.dsn("orders"), schema="orders",
                                  application_name="test")
    yield connection
    await connection.close()


def _order(*lines: tuple[f.SkuRow, int], key: str = "k1", member_id: uuid.UUID | None = None,
           from_cart: bool = False) -> Order:
    priced = tuple(
        Line(sku_id=s.id, product_id=s.product_id, merchant_id=uuid.uuid4(), category="apparel",
             quantity=q, unit_price=s.price, line_total=s.price * q) for s, q in lines)
    total = sum(x.line_total for x in priced)
    now = datetime.now(UTC)
    return Order(
        id=uuid.uuid4(), member_id=member_id or uuid.uuid4(), status="PENDING",
        subtotal=total, discount=0, points_redeemed=0, total=total, currency="CNY",
        payment_token="tok_visa", payment_id=None, cancel_reason=None, idempotency_key=key,
        payment_deadline=now + timedelta(minutes=5), points_pending=False, created_at=now,
        lines=priced, from_cart=from_cart)


def _placing(order: Order) -> Placing:
    return Placing(order=order, request_hash="h", retry_at=datetime.now(UTC),
                   event=outbox.pending(source="orders", subject="orders.order.placed",
                                        aggregate_id=str(order.id),
                                        message=ev.OrderPlaced(order_id=str(order.id))))


async def _place(conn: asyncpg.Connection, *orders: Order,
                 reserved: tuple[uuid.UUID, ...] = ()) -> list[placing.Placed]:
    return await placing.place(conn, [_placing(o) for o in orders], claim_timeout_s=30,
                               rate=RATE.params(), reserved=reserved)


async def _written(conn: asyncpg.Connection, *orders: Order) -> dict[str, int]:
    ids = [o.id for o in orders]
    return {
        "orders": await conn.fetchval("SELECT count(*) FROM orders WHERE id = ANY($1)", ids),
        "lines": await conn.fetchval(
            "SELECT count(*) FROM order_lines WHERE order_id = ANY($1)", ids),
        "keys": await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE order_id = ANY($1)", ids),
        "events": await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_id = ANY($1::text[])",
            [str(i) for i in ids]),
    }


PLACED = {"orders": 1, "lines": 1, "keys": 1, "events": 1}
NOTHING = {"orders": 0, "lines": 0, "keys": 0, "events": 0}


async def test_one_statement_gives_each_order_of_a_mixed_batch_its_own_outcome(
    conn: asyncpg.Connection,
) -> None:
    shop = await f.merchant(conn)
    plenty, scarce, hot = await f.product(conn, shop, skus=[(1_000, 10), (250, 2), (500, 5)])
    await stock.set_bucketed(conn, hot.id, buckets=2)
    reused = _order((plenty, 1), key="again")
    assert await _place(conn, reused) == [placing.Placed(Outcome.PLACED)]
    limited = uuid.uuid4()
    for key in ("r1", "r2"):
        assert (await _place(conn, _order((plenty, 1), key=key, member_id=limited)))[0].outcome \
            == Outcome.PLACED
    good = _order((plenty, 2), (scarce, 2))
    short = _order((scarce, 3))
    after_good = _order((scarce, 1))  # fits alone, not after `good` took both units
    replay = _order((plenty, 1), key="again", member_id=reused.member_id)
    rated = _order((plenty, 1), key="r3", member_id=limited)
    bucketed = _order((plenty, 1), (hot, 1))
    batch = (good, short, after_good, replay, rated, bucketed)
    sent: list[str] = []

    def note(query: LoggedQuery) -> None:
        sent.append(query.query)

    with conn.query_logger(note):
        outcomes = await _place(conn, *batch)
        await asyncio.sleep(0)  # asyncpg hands query logs over with call_soon

    assert len(sent) == 1  # one statement, its own transaction
    assert [o.outcome for o in outcomes] == [Outcome.PLACED, Outcome.SHORT, Outcome.RETRY,
                                             Outcome.HELD, Outcome.RATE, Outcome.STALE]
    assert (outcomes[1].short_sku, outcomes[1].short_stock) == (scarce.id, 2)
    assert await _written(conn, good) == PLACED | {"lines": 2}
    for refused in batch[1:]:
        assert await _written(conn, refused) == NOTHING
    assert [await f.stock_of(conn, s.id) for s in (plenty, scarce)] == [
        {"stock": 5, "held": 5, "sold": 0, "initial_stock": 10, "restocked": 0},
        {"stock": 0, "held": 2, "sold": 0, "initial_stock": 2, "restocked": 0}]
    assert await f.stock_of(conn, hot.id) == {
        "stock": 5, "held": 0, "sold": 0, "initial_stock": 5, "restocked": 0}


async def test_a_bucketed_order_is_placed_by_the_same_statement_in_its_transaction(
    conn: asyncpg.Connection,
) -> None:
    shop = await f.merchant(conn)
    plain, hot = await f.product(conn, shop, skus=[(1_000, 10), (500, 5)])
    await stock.set_bucketed(conn, hot.id, buckets=2)
    order = _order((plain, 1), (hot, 2))

    async with conn.transaction():
        # Every line's units, in SKU order (the lock order), then the statement.
        await stock.reserve(conn, order.lines, hot={hot.id})
        assert await _place(conn, order, reserved=(plain.id, hot.id)) == [
            placing.Placed(Outcome.PLACED)]

    assert await _written(conn, order) == PLACED | {"lines": 2}
    assert await f.stock_of(conn, hot.id) == {
        "stock": 3, "held": 2, "sold": 0, "initial_stock": 5, "restocked": 0}
    assert await f.stock_of(conn, plain.id) == {
        "stock": 9, "held": 1, "sold": 0, "initial_stock": 10, "restocked": 0}
    assert sum(await conn.fetchval("SELECT array_agg(stock) FROM sku_stock_buckets "
                                   "WHERE sku_id = $1", hot.id)) == 3


async def _cart(conn: asyncpg.Connection, member_id: uuid.UUID) -> list[tuple]:
    return [tuple(r) for r in await conn.fetch(
        "SELECT sku_id, quantity, order_id FROM cart_items WHERE member_id = $1 "
        "ORDER BY quantity", member_id)]


async def test_cart_orders_claim_their_lines_and_a_changed_cart_places_nothing(
    conn: asyncpg.Connection,
) -> None:
    a, b = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    buyer, changer = uuid.uuid4(), uuid.uuid4()
    for member in (buyer, changer):
        await carts.put(conn, member, a.id, 2)
        await carts.put(conn, member, b.id, 3)
    bought = _order((a, 2), (b, 3), member_id=buyer, from_cart=True)
    changed = _order((a, 2), (b, 3), member_id=changer, from_cart=True)
    await carts.put(conn, changer, b.id, 1)  # after this checkout read the cart

    outcomes = await _place(conn, bought, changed)

    assert [o.outcome for o in outcomes] == [Outcome.PLACED, Outcome.CART]
    assert await _cart(conn, buyer) == [(a.id, 2, bought.id), (b.id, 3, bought.id)]
    assert await _cart(conn, changer) == [(b.id, 1, None), (a.id, 2, None)]
    assert await _written(conn, changed) == NOTHING


def _settling(order: Order, status: str, *, reason: CancelReason | None = None) -> Settling:
    done = dataclasses.replace(order, status=status, cancel_reason=reason,
                               payment_id=uuid.uuid4() if status == "CONFIRMED" else None)
    subject = "orders.order.confirmed" if status == "CONFIRMED" else "orders.order.cancelled"
    message = (ev.OrderConfirmed(order_id=str(order.id)) if status == "CONFIRMED"
               else ev.OrderCancelled(order_id=str(order.id)))
    return Settling(order=done, reply_status=201 if status == "CONFIRMED" else 402,
                    reply_body=status.encode(), events=(outbox.pending(
                        source="orders", subject=subject, aggregate_id=str(order.id),
                        message=message),))


async def test_one_statement_confirms_and_cancels_a_batch_each_order_on_its_own(
    conn: asyncpg.Connection,
) -> None:
    a, b = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    buyer = uuid.uuid4()
    await carts.put(conn, buyer, a.id, 2)
    paid = _order((a, 2), member_id=buyer, from_cart=True)
    declined, settled_before = _order((a, 1), (b, 3)), _order((b, 1))
    assert {p.outcome for p in await _place(conn, paid, declined, settled_before)} == {
        Outcome.PLACED}
    assert await settling.settle(conn, [_settling(settled_before, "CANCELLED")]) == [
        Settled.DONE]
    sent: list[str] = []

    def note(query: LoggedQuery) -> None:
        sent.append(query.query)

    with conn.query_logger(note):
        results = await settling.settle(conn, [
            _settling(paid, "CONFIRMED"),
            _settling(declined, "CANCELLED", reason=CancelReason.PAYMENT_DECLINED),
            _settling(settled_before, "CONFIRMED")])
        await asyncio.sleep(0)

    assert len(sent) == 1
    assert results == [Settled.DONE, Settled.DONE, Settled.GONE]
    statuses = {r["id"]: tuple(r) for r in await conn.fetch(
        "SELECT o.id, o.status, o.cancel_reason, k.status AS key, k.response_status "
        "FROM orders o JOIN idempotency_keys k ON k.order_id = o.id")}
    assert statuses[paid.id][1:] == ("CONFIRMED", None, "done", 201)
    assert statuses[declined.id][1:] == ("CANCELLED", "payment_declined", "done", 402)
    assert statuses[settled_before.id][1:] == ("CANCELLED", None, "done", 402)
    assert [await f.stock_of(conn, s.id) for s in (a, b)] == [
        {"stock": 8, "held": 0, "sold": 2, "initial_stock": 10, "restocked": 0},
        {"stock": 10, "held": 0, "sold": 0, "initial_stock": 10, "restocked": 0}]
    assert await _cart(conn, buyer) == []  # bought: out of the cart for good
    assert await conn.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = 'orders.order.confirmed'") == 1


async def test_a_cancelled_order_of_a_bucketed_sku_is_left_to_its_transaction(
    conn: asyncpg.Connection,
) -> None:
    hot, = await f.product(conn, await f.merchant(conn), skus=[(500, 6)])
    await stock.set_bucketed(conn, hot.id, buckets=2)
    order = _order((hot, 2))
    async with conn.transaction():
        await stock.reserve(conn, order.lines, hot={hot.id})
        await _place(conn, order, reserved=(hot.id,))
    cancel = _settling(order, "CANCELLED", reason=CancelReason.PAYMENT_DECLINED)

    assert await settling.settle(conn, [cancel]) == [Settled.BUCKETS]
    assert await conn.fetchval("SELECT status FROM orders WHERE id = $1", order.id) == "PENDING"
    async with conn.transaction():
        await stock.refill(conn, order.lines)
        assert await settling.settle(conn, [cancel], refilled=(hot.id,)) == [Settled.DONE]

    assert await f.stock_of(conn, hot.id) == {
        "stock": 6, "held": 0, "sold": 0, "initial_stock": 6, "restocked": 0}
    assert sum(await conn.fetchval("SELECT array_agg(stock) FROM sku_stock_buckets "
                                   "WHERE sku_id = $1", hot.id)) == 6
