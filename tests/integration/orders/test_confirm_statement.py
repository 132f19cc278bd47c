"""A paid order is confirmed by one statement: all of it happens, or none of it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from marketplace.events.v1 import events_pb2 as ev

from services.common import db, outbox
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
    yield connection
    await connection.close()


async def _pending(conn: asyncpg.Connection, *, from_cart: bool) -> tuple[Order, list[f.SkuRow]]:
    """A PENDING order of two lines, its units held and its key in flight, as checkout leaves it."""
    skus = await f.product(conn, await f.merchant(conn), skus=[(1_000, 10), (250, 10)])
    member_id = uuid.uuid4()
    lines = tuple(
        Line(sku_id=s.id, product_id=s.product_id, merchant_id=uuid.uuid4(), category="apparel",
             quantity=q, unit_price=s.price, line_total=s.price * q)
        for s, q in zip(skus, (2, 3), strict=True))
    total = sum(x.line_total for x in lines)
    now = datetime.now(UTC)
    order = Order(
        id=uuid.uuid4(), member_id=member_id, status="PENDING", subtotal=total, discount=0,
        points_redeemed=0, total=total, currency="CNY", payment_token="tok_visa",
        payment_id=None, cancel_reason=None, idempotency_key="k1",
        payment_deadline=now + timedelta(minutes=5), points_pending=False, created_at=now,
        lines=lines, from_cart=from_cart)
    async with conn.transaction():
        assert await idempotency.claim(conn, member_id=member_id, key="k1", request_hash="h",
                                       order_id=order.id, claim_timeout_s=30) is None
        await store.reserve_stock(conn, lines)
        await store.insert_order(conn, order, retry_at=now)
    for s in skus:
        await carts.put(conn, member_id, s.id, 1)
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
