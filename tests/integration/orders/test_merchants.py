"""Merchants through REST: keys, products with SKUs, updates, restocks; every write an event."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
from marketplace.events.v1 import events_pb2 as ev

from tests.integration.orders.harness import ADMIN_KEY, Stack


def product_body(**overrides: Any) -> dict[str, Any]:
    return {
        "title": "Silk Road Qipao Dress", "description": "hand-finished seams",
        "category": "apparel",
        "skus": [{"attributes": {"colour": "red", "size": "M"},
                  "price": {"amount": 29_900, "currency": "CNY"}, "stock": 10},
                 {"attributes": {"colour": "navy", "size": "L"},
                  "price": {"amount": 31_900, "currency": "CNY"}, "stock": 4}],
    } | overrides


async def new_merchant(orders: httpx.AsyncClient, name: str = "Acme") -> dict[str, str]:
    created = await orders.post("/v1/merchants", json={"name": name},
                                headers={"X-Admin-Key": ADMIN_KEY})
    assert created.status_code == 201, created.text
    return {"id": created.json()["id"], "X-API-Key": created.json()["api_key"]}


def key(merchant: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": merchant["X-API-Key"]}


async def outbox(stack: Stack, aggregate_id: str) -> list[tuple[str, bytes]]:
    conn = await stack.sql()
    try:
        rows = await conn.fetch("SELECT subject, payload FROM outbox WHERE aggregate_id = $1 "
                                "ORDER BY seq", aggregate_id)
    finally:
        await conn.close()
    return [(r["subject"], bytes(r["payload"])) for r in rows]


async def test_merchant_keys_are_announced_hashed_and_rotation_retires_the_old_key(
    services: Stack,
) -> None:
    await services.start_orders()
    orders = services.orders
    assert orders is not None
    merchant = await new_merchant(orders)

    rotated = await orders.post("/v1/merchant/api-key/rotate", headers=key(merchant))
    old_key = await orders.get("/v1/merchant/products", headers=key(merchant))
    new_key = await orders.get("/v1/merchant/products",
                               headers={"X-API-Key": rotated.json()["api_key"]})

    assert rotated.status_code == 200, rotated.text
    assert old_key.status_code == 401
    assert new_key.status_code == 200 and new_key.json()["items"] == []
    events = await outbox(services, merchant["id"])
    assert [s for s, _ in events] == ["orders.merchant.created", "orders.merchant.key_rotated"]
    hashes = [ev.MerchantChanged.FromString(p).api_key_hash for _, p in events]
    assert hashes == [hashlib.sha256(k.encode()).hexdigest()
                      for k in (merchant["X-API-Key"], rotated.json()["api_key"])]


async def test_a_merchant_creates_updates_restocks_and_lists_its_products(
    services: Stack,
) -> None:
    await services.start_orders()
    orders = services.orders
    assert orders is not None
    mine, theirs = await new_merchant(orders), await new_merchant(orders, "Other")

    created = await orders.post("/v1/merchant/products", json=product_body(), headers=key(mine))
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["merchant_id"] == mine["id"] and not product["hot"]
    assert sorted(s["stock_available"] for s in product["skus"]) == [4, 10]
    pid, sku = product["id"], product["skus"][0]["id"]
    foreign = await orders.patch(f"/v1/merchant/products/{pid}", json={"title": "Mine now"},
                                 headers=key(theirs))
    foreign_restock = await orders.post(f"/v1/merchant/skus/{sku}/restock",
                                        json={"quantity": 5}, headers=key(theirs))
    patched = await orders.patch(f"/v1/merchant/products/{pid}",
                                 json={"title": "Qipao Dress, silk"}, headers=key(mine))
    restocked = await orders.post(f"/v1/merchant/skus/{sku}/restock", json={"quantity": 5},
                                  headers=key(mine))

    assert foreign.status_code == 404 and foreign_restock.status_code == 404
    assert patched.status_code == 200 and patched.json()["title"] == "Qipao Dress, silk"
    before = product["skus"][0]["stock_available"]
    assert restocked.json() == {"sku_id": sku, "stock_available": before + 5}
    public = (await orders.get(f"/v1/products/{pid}")).json()
    assert public["title"] == "Qipao Dress, silk"
    assert [s for s, _ in await outbox(services, pid)] == [
        "orders.product.created", "orders.product.updated"]
    assert [s for s, _ in await outbox(services, sku)] == ["orders.stock.changed"]
    conn = await services.sql()
    try:
        row = await conn.fetchrow("SELECT stock, initial_stock, restocked FROM skus "
                                  "WHERE id = $1", uuid.UUID(sku))
    finally:
        await conn.close()
    assert dict(row) == {"stock": before + 5, "initial_stock": before, "restocked": 5}
    own = await orders.get("/v1/merchant/products", headers=key(mine))
    assert [p["id"] for p in own.json()["items"]] == [pid]


async def test_product_writes_validate_every_field_and_refuse_mass_assignment(
    services: Stack,
) -> None:
    await services.start_orders()
    orders = services.orders
    assert orders is not None
    merchant = await new_merchant(orders)
    sku = product_body()["skus"][0]
    cases = {
        "skus.0.price.amount": {"skus": [sku | {"price": {"amount": 0, "currency": "CNY"}}]},
        "skus.0.price.currency": {"skus": [sku | {"price": {"amount": 100, "currency": "USD"}}]},
        "skus.0.attributes.colour": {"skus": [sku | {"attributes": {"colour": {"r": 1}}}]},
        "skus.0.stock": {"skus": [sku | {"stock": -1}]},
        "skus": {"skus": [sku] * 51},
        "title": {"title": ""},
        "merchant_id": {"merchant_id": str(uuid.uuid4())},
        "skus.0.stock_available": {"skus": [sku | {"stock_available": 10**6}]},
    }
    for field, change in cases.items():
        answer = await orders.post("/v1/merchant/products", json=product_body(**change),
                                   headers=key(merchant))
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["errors"][0]["field"] == field, answer.json()
    unauthenticated = await orders.post("/v1/merchant/products", json=product_body())
    assert unauthenticated.status_code == 401
    own = await orders.get("/v1/merchant/products", headers=key(merchant))
    assert own.json()["items"] == []


async def test_categories_count_their_products(services: Stack) -> None:
    await services.start_orders()
    orders = services.orders
    assert orders is not None
    merchant = await new_merchant(orders)
    for category in ("books", "books", "toys"):
        made = await orders.post("/v1/merchant/products", json=product_body(category=category),
                                 headers=key(merchant))
        assert made.status_code == 201, made.text

    answer = await orders.get("/v1/categories")

    assert answer.json() == {"items": [{"name": "books", "product_count": 2},
                                       {"name": "toys", "product_count": 1}]}
