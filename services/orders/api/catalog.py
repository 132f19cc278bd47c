"""Browsing the catalog: product search and filters with keyset pages, product detail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.common.errors import not_found, problems, validation_error
from services.common.inputs import QueryInt64, Text
from services.orders.api.deps import Ctx, decode_cursor, encode_cursor
from services.orders.api.schemas import Categories, Product, ProductPage
from services.orders.context import Context
from services.orders.page_cache import listing_key
from services.orders.store import catalog, products
from services.orders.views import json_response, money

router = APIRouter(prefix="/v1", tags=["catalog"])


def sku_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "attributes": row["attributes"],
        "price": money(row["price"], row["currency"]),
        "stock_available": row["stock"],
    }


def product_json(row: asyncpg.Record, skus: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "merchant_id": str(row["merchant_id"]),
        "title": row["title"],
        "description": row["description"],
        "category": row["category"],
        "hot": row["hot"],
        "skus": [sku_json(s) for s in skus],
    }


def page_key(cursor: str | None, searching: bool) -> catalog.PageKey | None:
    if cursor is None:
        return None
    pos = decode_cursor(cursor)
    try:
        if searching and pos.get("m") == "r":
            return catalog.RankKey(rank=float(pos["r"]), id=uuid.UUID(pos["i"]))
        if not searching and pos.get("m") == "n":
            return catalog.NewestKey(created_at=datetime.fromisoformat(pos["t"]),
                                     id=uuid.UUID(pos["i"]))
    except (KeyError, TypeError, ValueError):
        pass
    raise validation_error("cursor", "not a cursor for this query (was `q` changed?)")


def next_cursor(row: asyncpg.Record, searching: bool) -> str:
    if searching:
        return encode_cursor({"m": "r", "r": row["rank"], "i": str(row["id"])})
    return encode_cursor({"m": "n", "t": row["created_at"].isoformat(), "i": str(row["id"])})


@router.get("/products", response_model=ProductPage, summary="Search and filter products",
            operation_id="listProducts")
async def list_products(
    ctx: Ctx,
    request: Request,
    q: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
    category: Annotated[Text | None, Query(min_length=1, max_length=100)] = None,
    merchant_id: uuid.UUID | None = None,
    min_price: Annotated[QueryInt64 | None, Query(ge=0, description="fen")] = None,
    max_price: Annotated[QueryInt64 | None, Query(ge=0, description="fen")] = None,
    in_stock: Annotated[bool, Query(description="only products with a SKU in stock")] = False,
    limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=512)] = None,
) -> Response:
    """Newest first; with `q`, by relevance. Pass `next_cursor` back for the next page."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise validation_error("max_price", "must not be below min_price")
    searching = q is not None
    f = catalog.ProductFilter(q=q, category=category, merchant_id=merchant_id,
                              min_price=min_price, max_price=max_price, in_stock=in_stock)
    after = page_key(cursor, searching)

    async def compute() -> bytes:
        async with ctx.pool.acquire() as conn:
            rows = await catalog.list_products(conn, f=f, after=after, limit=limit)
            page, more = rows[:limit], len(rows) > limit
            skus = await catalog.skus_of(conn, [r["id"] for r in page])
        return orjson.dumps({
            "items": [product_json(r, skus[r["id"]]) for r in page],
            "next_cursor": next_cursor(page[-1], searching) if more else None,
        })

    key = listing_key(request.url.path, request.scope["query_string"])
    return _listing(ctx, await ctx.listings.get(key, compute))


def _listing(ctx: Context, body: bytes) -> Response:
    """A listing that may be reused for as long as the server itself reuses it."""
    return Response(body, media_type="application/json",
                    headers={"Cache-Control": f"public, max-age={ctx.listings.max_age}"})


@router.get("/products/{product_id}", response_model=Product, responses=problems(404),
            summary="One product with its SKUs", operation_id="getProduct")
async def get_product(ctx: Ctx, product_id: uuid.UUID) -> Response:
    async with ctx.pool.acquire() as conn:
        row = await catalog.get_product(conn, product_id)
        if row is None:
            raise not_found(f"product {product_id}")
        skus = await catalog.skus_of(conn, [product_id])
    return json_response(product_json(row, skus[product_id]))


@router.get("/categories", response_model=Categories, summary="Categories with product counts",
            operation_id="listCategories")
async def list_categories(ctx: Ctx, request: Request) -> Response:
    async def compute() -> bytes:
        async with ctx.pool.acquire() as conn:
            rows = await products.categories(conn)
        return orjson.dumps({"items": [{"name": r["name"], "product_count": r["product_count"]}
                                       for r in rows]})

    key = listing_key(request.url.path, request.scope["query_string"])
    return _listing(ctx, await ctx.listings.get(key, compute))
