"""A merchant's own products: create with SKUs, update, restock, list (X-API-Key)."""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import Response

from services.common import errors, outbox
from services.common.inputs import QueryInt64, Text
from services.orders import messages
from services.orders.api.catalog import next_cursor, page_key, product_json
from services.orders.api.deps import Ctx
from services.orders.api.merchants import SOURCE, CurrentMerchant
from services.orders.api.schemas import (
    Product,
    ProductIn,
    ProductPage,
    ProductPatch,
    Restocked,
    RestockIn,
)
from services.orders.store import catalog, products, stock
from services.orders.views import json_response

router = APIRouter(prefix="/v1/merchant", tags=["merchant catalog"])


async def _product_json(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, object]:
    skus = await catalog.skus_of(conn, [row["id"]])
    return product_json(row, skus[row["id"]])


async def _set_hot(ctx: Ctx, conn: asyncpg.Connection, sku_ids: list[uuid.UUID],
                   hot: bool) -> None:
    for sku_id in sku_ids:
        await stock.set_bucketed(conn, sku_id, buckets=ctx.settings.hot_sku_buckets if hot else 0)
        ctx.admission.hot.put(sku_id, int(hot))


@router.post("/products", status_code=201, response_model=Product,
             summary="Create a product with its SKUs", operation_id="createMerchantProduct")
async def create_product(ctx: Ctx, merchant: CurrentMerchant, body: ProductIn) -> Response:
    skus = [(s.attributes, s.price.amount, s.price.currency, s.stock) for s in body.skus]
    async with ctx.pool.acquire() as conn, conn.transaction():
        row, sku_ids = await products.insert_product(
            conn, merchant_id=merchant.id, title=body.title, description=body.description,
            category=body.category, hot=body.hot, skus=skus)
        if body.hot:
            await _set_hot(ctx, conn, sku_ids, True)
        await outbox.add_event(conn, source=SOURCE, subject="orders.product.created",
                               aggregate_id=str(row["id"]),
                               message=messages.product_changed(row, sku_ids))
        answer = await _product_json(conn, row)
    return json_response(answer, status_code=201)


@router.patch("/products/{product_id}", response_model=Product, responses=errors.problems(404),
              summary="Change a product's title, description, category or hot flag",
              operation_id="updateMerchantProduct")
async def update_product(
    ctx: Ctx, merchant: CurrentMerchant, product_id: uuid.UUID, body: ProductPatch
) -> Response:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise errors.validation_error("body", "give at least one field to change")
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await products.own_product(conn, product_id, merchant.id, for_update=True)
        if row is None:
            raise errors.not_found(f"product {product_id}")
        sku_ids = await products.sku_ids_of(conn, product_id)
        if "hot" in changes and changes["hot"] != row["hot"]:
            await _set_hot(ctx, conn, sku_ids, changes["hot"])
        row = await products.update_product(conn, product_id, changes)
        await outbox.add_event(conn, source=SOURCE, subject="orders.product.updated",
                               aggregate_id=str(product_id),
                               message=messages.product_changed(row, sku_ids))
        answer = await _product_json(conn, row)
    return json_response(answer)


@router.post("/skus/{sku_id}/restock", response_model=Restocked,
             responses=errors.problems(404, 409),
             summary="Add units on hand to one of the merchant's SKUs", operation_id="restockSku")
async def restock(
    ctx: Ctx, merchant: CurrentMerchant, sku_id: uuid.UUID, body: RestockIn
) -> Response:
    """`quantity` up to 1,000,000 per call, and on-hand stock stays within 2,147,483,647."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        sku = await products.own_sku(conn, sku_id, merchant.id)
        if sku is None:
            raise errors.not_found(f"SKU {sku_id}")
        try:
            now = await stock.restock(conn, sku_id, body.quantity)
        except stock.TooMuchStock as exc:
            raise errors.validation_error(
                "quantity", f"at most {exc.room} more units fit on hand for this SKU") from exc
        if now is None:
            raise errors.Problem(409, "conflict", "Stock changed",
                                 "the SKU changed while restocking; retry")
        await outbox.add_event(
            conn, source=SOURCE, subject="orders.stock.changed", aggregate_id=str(sku_id),
            message=messages.stock_changed(sku_id=sku_id, product_id=sku["product_id"],
                                           delta=body.quantity, stock=now, reason="restocked"))
    ctx.admission.left.put(sku_id, now)  # buyers held off as "sold out" may come back
    return json_response({"sku_id": str(sku_id), "stock_available": now})


@router.get("/products", response_model=ProductPage, summary="The merchant's own products",
            operation_id="listMerchantProducts")
async def list_own_products(
    ctx: Ctx, merchant: CurrentMerchant,
    limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=512)] = None,
) -> Response:
    """Newest first; pass `next_cursor` back for the next page."""
    f = catalog.ProductFilter(merchant_id=merchant.id)
    async with ctx.pool.acquire() as conn:
        rows = await catalog.list_products(conn, f=f, after=page_key(cursor, False), limit=limit)
        page, more = rows[:limit], len(rows) > limit
        skus = await catalog.skus_of(conn, [r["id"] for r in page])
    return json_response({
        "items": [product_json(r, skus[r["id"]]) for r in page],
        "next_cursor": next_cursor(page[-1], False) if more else None,
    })
