"""Browsing: filters, search and keyset pages; product detail; merchants (admin)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx

from tests.helpers import eventually
from tests.integration.orders import factories as f
from tests.integration.orders.harness import ADMIN_KEY, Stack

CATEGORIES = ("apparel", "electronics", "home")


async def _catalog(stack: Stack) -> dict[str, dict[str, Any]]:
    """30 products over two merchants and three categories; returns them by id."""
    conn = await stack.sql()
    products: dict[str, dict[str, Any]] = {}
    try:
        merchants = [await f.merchant(conn, "North"), await f.merchant(conn, "South")]
        for n in range(30):
            category = CATEGORIES[n % 3]
            title = f"{'Wireless Earbuds' if n % 5 == 0 else 'Cotton Shirt'} {n}"
            price, stock = 1_000 + 100 * n, (0 if n % 4 == 0 else 3)
            skus = await f.product(conn, merchants[n % 2], title=title, category=category,
                                   skus=[(price, stock), (price + 50, stock)])
            products[str(skus[0].product_id)] = {
                "merchant": str(merchants[n % 2]), "category": category, "title": title,
                "min": price, "max": price + 50, "stock": stock}
    finally:
        await conn.close()
    return products


async def _walk(client: httpx.AsyncClient, **params: Any) -> list[str]:
    """Every product id the listing yields, page by page."""
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        query = params | {"limit": 7} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/products", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 7
        ids += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the listing never ended")


async def test_every_filter_walks_every_match_exactly_once(services: Stack) -> None:
    await services.start_orders()
    products = await _catalog(services)
    assert services.orders is not None
    client = services.orders
    merchant = next(iter(products.values()))["merchant"]
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({}, set(products)),
        ({"category": "home"}, {i for i, p in products.items() if p["category"] == "home"}),
        ({"merchant_id": merchant}, {i for i, p in products.items() if p["merchant"] == merchant}),
        ({"min_price": 2_000, "max_price": 2_500},
         {i for i, p in products.items() if p["max"] >= 2_000 and p["min"] <= 2_500}),
        ({"in_stock": "true"}, {i for i, p in products.items() if p["stock"] > 0}),
        ({"q": "earbuds"}, {i for i, p in products.items() if "Earbuds" in p["title"]}),
        ({"q": "shirt", "category": "apparel", "in_stock": "true"},
         {i for i, p in products.items() if "Shirt" in p["title"]
          and p["category"] == "apparel" and p["stock"] > 0}),
    ]

    for params, expected in cases:
        ids = await _walk(client, **params)
        assert len(ids) == len(set(ids)), f"duplicates with {params}"
        assert set(ids) == expected, params


async def test_a_product_shows_its_skus_with_prices_and_stock(services: Stack) -> None:
    await services.start_orders()
    conn = await services.sql()
    try:
        skus = await f.product(conn, await f.merchant(conn), title="Linen Dress",
                               skus=[(25_900, 4)], attributes={"colour": "blue", "size": "S"})
    finally:
        await conn.close()
    assert services.orders is not None

    body = (await services.orders.get(f"/v1/products/{skus[0].product_id}")).json()
    missing = await services.orders.get(f"/v1/products/{uuid.uuid4()}")

    assert body["title"] == "Linen Dress"
    assert body["skus"] == [{"id": str(skus[0].id), "attributes": {"colour": "blue", "size": "S"},
                             "price": {"amount": 25_900, "currency": "CNY"},
                             "stock_available": 4}]
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def _listings_counted(services: Stack) -> float:
    """`GET /v1/products` answered 200, as /metrics counts them."""
    assert services.orders is not None
    text = (await services.orders.get("/metrics")).text
    line = 'marketplace_http_requests_total{method="GET",route="/v1/products",status="200"} '
    return sum(float(row.removeprefix(line)) for row in text.splitlines()
               if row.startswith(line))


async def test_listings_are_shared_for_a_second_and_detail_is_always_fresh(
    services: Stack,
) -> None:
    await services.start_orders()
    assert services.orders is not None
    conn = await services.sql()
    try:
        merchant = await f.merchant(conn)
        await f.product(conn, merchant, title="Silk Scarf", skus=[(9_900, 3)])
        first = await services.orders.get("/v1/products", params={"merchant_id": str(merchant)})
        # A product added now is in the listing once its page expires, at once in detail.
        later = await f.product(conn, merchant, title="Silk Gloves", skus=[(5_900, 2)])
    finally:
        await conn.close()
    counted = await _listings_counted(services)
    again = await services.orders.get("/v1/products", params={"merchant_id": str(merchant)})
    detail = await services.orders.get(f"/v1/products/{later[0].product_id}")

    assert first.headers["cache-control"] == "public, max-age=1"
    assert again.content == first.content  # the same page, from memory
    # Answered before the service middleware, yet with its headers and in its metrics.
    assert again.headers["cache-control"] == "public, max-age=1"
    assert again.headers["x-content-type-options"] == "nosniff"
    assert again.headers["x-frame-options"] == "DENY"
    assert await _listings_counted(services) == counted + 1
    assert detail.status_code == 200 and detail.headers["cache-control"] == "no-store"

    async def titles() -> list[str]:
        assert services.orders is not None
        page = await services.orders.get("/v1/products", params={"merchant_id": str(merchant)})
        return sorted(p["title"] for p in page.json()["items"])

    assert await eventually(titles, until=lambda t: len(t) == 2, what="the new product listed",
                            timeout_s=10) == ["Silk Gloves", "Silk Scarf"]


async def test_bad_query_parameters_name_their_field(services: Stack) -> None:
    await services.start_orders()
    assert services.orders is not None
    cases = {
        "limit": {"limit": 101},
        "min_price": {"min_price": -1},
        "max_price": {"min_price": 500, "max_price": 100},
        "merchant_id": {"merchant_id": "not-a-uuid"},
        "cursor": {"cursor": "bm90IGEgY3Vyc29y"},
    }
    for field, params in cases.items():
        response = await services.orders.get("/v1/products", params=params)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["field"] == field


async def test_an_admin_creates_a_merchant_whose_key_is_stored_hashed(services: Stack) -> None:
    await services.start_orders()
    assert services.orders is not None

    refused = await services.orders.post("/v1/merchants", json={"name": "Acme"},
                                         headers={"X-Admin-Key": "wrong"})
    created = await services.orders.post("/v1/merchants", json={"name": "Acme"},
                                         headers={"X-Admin-Key": ADMIN_KEY})

    assert refused.status_code == 401
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "Acme" and body["api_key"]
    conn = await services.sql()
    try:
        stored = await conn.fetchval("SELECT api_key_hash FROM merchants WHERE id = $1",
                                     uuid.UUID(body["id"]))
    finally:
        await conn.close()
    assert stored == hashlib.sha256(body["api_key"].encode()).hexdigest()
