"""Seeds: a deterministic catalog loaded once, with an outbox event per product."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import asyncpg

from seeds.seed import seed_if_empty
from services.common.events import Event
from tests.infra import FreshDb
from tests.integration.orders.harness import Stack


async def test_an_empty_catalog_is_seeded_once_and_the_same_way_each_time(
    services: Stack, fresh_db: Callable[..., Awaitable[FreshDb]],
) -> None:
    dsns = {"orders": services.db.dsn("orders")}

    first = await seed_if_empty(dsns, progress=False)
    second = await seed_if_empty(dsns, progress=False)

    assert (first, second) == (True, False)
    conn = await services.sql()
    try:
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM merchants) AS merchants, "
            "(SELECT count(*) FROM products) AS products, (SELECT count(*) FROM skus) AS skus, "
            "(SELECT count(DISTINCT category) FROM products) AS categories, "
            "(SELECT count(*) FROM products WHERE hot) AS hot")
        assert dict(counts) | {"hot": counts["hot"] > 0} == {
            "merchants": 50, "products": 2_000, "skus": 5_000, "categories": 12, "hot": True}
        sku = await conn.fetchrow(
            "SELECT s.attributes ->> 'colour' AS colour, s.attributes ->> 'size' AS size, "
            "s.price, s.stock, s.initial_stock, p.title FROM skus s "
            "JOIN products p ON p.id = s.product_id ORDER BY s.id LIMIT 1")
        assert sku["colour"] and sku["size"]
        assert sku["price"] > 0 and sku["stock"] == sku["initial_stock"]
        rows = await conn.fetch(
            "SELECT event_id, subject, payload, headers FROM outbox ORDER BY seq")
        assert len(rows) == 2_000
        first_event = Event(id=rows[0]["event_id"], subject=rows[0]["subject"],
                            data=bytes(rows[0]["payload"]),
                            headers=json.loads(rows[0]["headers"]))
        message = first_event.message()
        assert first_event.subject == "orders.product.created"
        assert first_event.headers["Nats-Msg-Id"] == str(rows[0]["event_id"])
        assert len(message.sku_ids) >= 1 and message.title
        ordered = await conn.fetchval(
            "SELECT string_agg(id::text, ',' ORDER BY created_at DESC, id DESC) FROM products")
    finally:
        await conn.close()
    # Same seed, same catalog: the product ids of a second database match the first's.
    other = await fresh_db("seed")
    await seed_if_empty({"orders": other.dsn("orders")}, progress=False)
    conn = await asyncpg.connect(other.dsn("orders"), server_settings={"search_path": "orders"})
    try:
        assert await conn.fetchval(
            "SELECT string_agg(id::text, ',' ORDER BY created_at DESC, id DESC) FROM products"
        ) == ordered
    finally:
        await conn.close()
