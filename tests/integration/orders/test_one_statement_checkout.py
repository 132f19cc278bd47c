"""Checkout's two writes as one statement each: placing a PENDING order, confirming a paid
one. All of either happens, or none of it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from marketplace.events.v1 import events_pb2 as ev

from services.common import db, outbox, ratelimit
from services.common.ratelimit import Rate, SharedLimit
from services.orders.store import carts, idempotency
from services.orders.store import orders as store
from services.orders.store.orders import Line, Order
from tests.infra import FreshDb
from tests.integration.orders import factories as f
from tests.integration.orders.harness import Stack


@pytest.fixture
async def conn(services: Stack) -> AsyncIterator[asyncpg.Connection]:
    """Orders' schema, migrated by starting orders once; a connection with orders' codecs."""
    await services.start_membership()
    await services.start_payments()
    await services.start_orders()
    database: FreshDb = services.db
    connection = await db.connect(database.dsn("orders"), schema="orders",
                                  application_name="test")
    # asyncpg looks up an array type on a connection's first use of it; not checkout's.
    await connection.fetchval("SELECT $1::int[], $2::uuid[], $3::text[], $4::bigint[]",
                              [], [], [], [])
    yield connection
    await connection.close()


def _order(skus: list[f.SkuRow], *, from_cart: bool = False, key: str = "k1",
           member_id: uuid.UUID | None = None) -> Order:
    """A new order of 2 units of the first SKU and 3 of the second."""
    lines = tuple(
        Line(sku_id=s.id, product_id=s.product_id, merchant_id=uuid.uuid4(), category="apparel",
             quantity=q, unit_price=s.price, line_total=s.price * q)
        for s, q in zip(skus, (2, 3), strict=True))
    total = sum(x.line_total for x in lines)
    now = datetime.now(UTC)
    return Order(
        id=uuid.uuid4(), member_id=member_id or uuid.uuid4(), status="PENDING",
        subtotal=total, discount=0, points_redeemed=0, total=total, currency="CNY",
        payment_token="tok_visa", payment_id=None, cancel_reason=None, idempotency_key=key,
        payment_deadline=now + timedelta(minutes=5), points_pending=False, created_at=now,
        lines=lines, from_cart=from_cart)


async def _pending(conn: asyncpg.Connection, *, from_cart: bool) -> tuple[Order, list[f.SkuRow]]:
    """A PENDING order of two lines, its units held, its key in flight and (from the cart) its
    cart lines claimed, as checkout leaves it; the same lines are in the cart either way."""
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    order = _order(skus, from_cart=from_cart)
    member_id, lines, now = order.member_id, order.lines, datetime.now(UTC)
    for line in lines:
        await carts.put(conn, member_id, line.sku_id, line.quantity)
    async with conn.transaction():
        assert await idempotency.claim(conn, member_id=member_id, key="k1", request_hash="h",
                                       order_id=order.id, claim_timeout_s=30) is None
        if from_cart:
            assert await carts.claim(conn, member_id, order.id,
                                     [(x.sku_id, x.quantity) for x in lines])
        await store.reserve_stock(conn, lines)
        await store.insert_order(conn, order, retry_at=now)
    return order, skus


async def _confirm(conn: asyncpg.Connection, order: Order, payment_id: uuid.UUID) -> bool:
    return await store.confirm_paid(
        conn, order.id, was="PENDING", now="CONFIRMED", payment_id=payment_id,
        points_pending=False, reply_status=201, reply_body=b'{"status":"CONFIRMED"}',
        event=outbox.pending(source="orders", subject="orders.order.confirmed",
                             aggregate_id=str(order.id),
                             message=ev.OrderConfirmed(order_id=str(order.id))))


async def _state(conn: asyncpg.Connection, order: Order, skus: list[f.SkuRow]) -> dict:
    return {
        "status": await conn.fetchval("SELECT status FROM orders WHERE id = $1", order.id),
        "stock": [await f.stock_of(conn, s.id) for s in skus],
        "cart": await conn.fetchval("SELECT count(*) FROM cart_items WHERE member_id = $1",
                                    order.member_id),
        "events": await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregate_id = $1 "
            "AND subject = 'orders.order.confirmed'", str(order.id)),
        "key": tuple(await conn.fetchrow(
            "SELECT status, response_status, response_body FROM idempotency_keys "
            "WHERE order_id = $1", order.id)),
    }


@pytest.mark.parametrize("from_cart", [True, False])
async def test_one_statement_confirms_sells_the_held_units_announces_and_answers(
    conn: asyncpg.Connection, from_cart: bool
) -> None:
    order, skus = await _pending(conn, from_cart=from_cart)
    payment_id = uuid.uuid4()
    sent: list[str] = []

    def note(query: LoggedQuery) -> None:
        sent.append(query.query)

    with conn.query_logger(note):
        assert await _confirm(conn, order, payment_id)
        await asyncio.sleep(0)  # asyncpg hands query logs over with call_soon

    assert len(sent) == 1  # no BEGIN/COMMIT either: the statement is its own transaction
    assert await _state(conn, order, skus) == {
        "status": "CONFIRMED",
        "stock": [{"stock": 8, "held": 0, "sold": 2, "initial_stock": 10, "restocked": 0},
                  {"stock": 7, "held": 0, "sold": 3, "initial_stock": 10, "restocked": 0}],
        "cart": 0 if from_cart else 2,
        "events": 1,
        "key": ("done", 201, b'{"status":"CONFIRMED"}'),
    }
    assert await conn.fetchval("SELECT payment_id FROM orders WHERE id = $1",
                               order.id) == payment_id


async def test_an_order_no_longer_pending_is_left_exactly_as_it_is(
    conn: asyncpg.Connection,
) -> None:
    order, skus = await _pending(conn, from_cart=True)
    assert await _confirm(conn, order, uuid.uuid4())
    after_first = await _state(conn, order, skus)

    assert not await _confirm(conn, order, uuid.uuid4())  # e.g. recovery, a moment later

    assert await _state(conn, order, skus) == after_first


async def test_held_units_that_are_not_there_fail_the_whole_confirmation(
    conn: asyncpg.Connection,
) -> None:
    order, skus = await _pending(conn, from_cart=True)
    # Counters that disagree with the order (they cannot, short of a bug elsewhere).
    await conn.execute("UPDATE skus SET held = held - 1, stock = stock + 1 WHERE id = $1",
                       skus[1].id)
    before = await _state(conn, order, skus)

    with pytest.raises(asyncpg.CheckViolationError):
        await _confirm(conn, order, uuid.uuid4())

    assert await _state(conn, order, skus) == before  # still PENDING, no event, key in flight


def _placed_event(order: Order) -> outbox.Pending:
    return outbox.pending(source="orders", subject="orders.order.placed",
                          aggregate_id=str(order.id),
                          message=ev.OrderPlaced(order_id=str(order.id)))


# The per-member checkout rate: 2 at once, then one every 100 s.
RATE = SharedLimit("checkout-member", Rate(2, timedelta(seconds=100)))


async def _place(conn: asyncpg.Connection, order: Order) -> bool:
    return await store.place(conn, order, retry_at=datetime.now(UTC), request_hash="h",
                             claim_timeout_s=30, event=_placed_event(order),
                             rate=RATE.params())


async def _written(conn: asyncpg.Connection, skus: list[f.SkuRow]) -> dict:
    return {
        "orders": await conn.fetchval("SELECT count(*) FROM orders"),
        "lines": await conn.fetchval("SELECT count(*) FROM order_lines"),
        "keys": await conn.fetchval("SELECT count(*) FROM idempotency_keys"),
        "events": await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE subject = 'orders.order.placed'"),
        "stock": [await f.stock_of(conn, s.id) for s in skus],
    }


async def test_one_statement_places_the_order_holds_its_units_claims_the_key_and_announces(
    conn: asyncpg.Connection,
) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    order = _order(skus)
    sent: list[str] = []

    def note(query: LoggedQuery) -> None:
        sent.append(query.query)

    with conn.query_logger(note):
        assert await _place(conn, order)
        await asyncio.sleep(0)

    assert len(sent) == 1
    assert await _written(conn, skus) == {
        "orders": 1, "lines": 2, "keys": 1, "events": 1,
        "stock": [{"stock": 8, "held": 2, "sold": 0, "initial_stock": 10, "restocked": 0},
                  {"stock": 7, "held": 3, "sold": 0, "initial_stock": 10, "restocked": 0}]}
    stored = await store.get_order(conn, order.id)
    assert stored is not None
    assert (stored.status, stored.total, stored.lines) == ("PENDING", order.total, order.lines)
    assert tuple(await conn.fetchrow(
        "SELECT status, order_id, request_hash FROM idempotency_keys WHERE member_id = $1 "
        "AND key = 'k1'", order.member_id)) == ("in_flight", order.id, "h")


async def test_a_member_past_the_rate_places_nothing_and_claims_no_key(
    conn: asyncpg.Connection,
) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    member = uuid.uuid4()
    assert await _place(conn, _order(skus, member_id=member, key="a"))
    assert not await _place(conn, _order(skus, member_id=member, key="a"))  # a replay: free
    assert await _place(conn, _order(skus, member_id=member, key="b"))
    before = await _written(conn, skus)

    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await _place(conn, _order(skus, member_id=member, key="c"))

    assert ratelimit.is_refusal(refused.value)
    assert await _written(conn, skus) == before  # no order, no key "c", no units held
    assert 99 < await RATE.refused(conn, str(member)) <= 100
    assert await _place(conn, _order(skus, key="c"))  # another member's own budget


async def test_a_key_already_held_places_nothing(conn: asyncpg.Connection) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    first = _order(skus)
    assert await _place(conn, first)
    before = await _written(conn, skus)

    assert not await _place(conn, _order(skus, member_id=first.member_id))  # same key

    assert await _written(conn, skus) == before


async def test_too_few_units_of_any_line_place_nothing_at_all(conn: asyncpg.Connection) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 2)])
    before = await _written(conn, skus)

    with pytest.raises(store.NotPlaced):
        await _place(conn, _order(skus))  # 3 of the second SKU, which has 2

    assert await _written(conn, skus) == before  # not even the first line's units or the key


async def test_a_sku_bucketed_since_it_was_remembered_places_nothing(
    conn: asyncpg.Connection,
) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    # Bucketed as a flash sale does it: its on-hand units move into its bucket rows.
    await conn.execute("INSERT INTO sku_stock_buckets (sku_id, bucket, stock) VALUES ($1, 0, 10)",
                       skus[1].id)
    await conn.execute("UPDATE skus SET bucketed = true WHERE id = $1", skus[1].id)
    before = await _written(conn, skus)

    with pytest.raises(store.NotPlaced):
        await _place(conn, _order(skus))

    assert await _written(conn, skus) == before


async def _cart_lines(conn: asyncpg.Connection, member_id: uuid.UUID) -> list[tuple]:
    return [tuple(r) for r in await conn.fetch(
        "SELECT sku_id, quantity, order_id FROM cart_items WHERE member_id = $1 "
        "ORDER BY quantity", member_id)]


async def test_a_cart_order_claims_its_cart_lines_in_the_placing_statement(
    conn: asyncpg.Connection,
) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    order = _order(skus, from_cart=True)
    for line in order.lines:
        await carts.put(conn, order.member_id, line.sku_id, line.quantity)

    assert await _place(conn, order)

    assert await _cart_lines(conn, order.member_id) == [
        (skus[0].id, 2, order.id), (skus[1].id, 3, order.id)]
    assert await carts.items(conn, order.member_id) == []  # out of the cart while it is paid


@pytest.mark.parametrize("taken", ["claimed", "changed"])
async def test_a_cart_line_claimed_or_changed_since_it_was_read_places_nothing(
    conn: asyncpg.Connection, taken: str
) -> None:
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    first = _order(skus, from_cart=True)
    for line in first.lines:
        await carts.put(conn, first.member_id, line.sku_id, line.quantity)
    if taken == "claimed":  # a concurrent checkout of the same cart placed first
        assert await _place(conn, first)
    else:  # the member changed a quantity after this checkout read the cart
        await carts.put(conn, first.member_id, skus[1].id, 1)
    cart, before = await _cart_lines(conn, first.member_id), await _written(conn, skus)

    with pytest.raises(store.NotPlaced):
        await _place(conn, _order(skus, from_cart=True, key="k2", member_id=first.member_id))

    assert await _written(conn, skus) == before
    assert await _cart_lines(conn, first.member_id) == cart
