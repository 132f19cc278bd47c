"""The signed-in member's cart: PUT a SKU's quantity, DELETE a line, GET the cart."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import Response

from services.common.errors import Problem, validation_error
from services.orders.api.deps import Ctx, CurrentMember
from services.orders.api.schemas import Cart, CartItemIn
from services.orders.store import carts, catalog
from services.orders.views import json_response, money

router = APIRouter(prefix="/v1/cart", tags=["cart"])


async def _cart(ctx: Ctx, member_id: uuid.UUID) -> Response:
    async with ctx.pool.acquire() as conn:
        rows = await carts.items(conn, member_id)
    return json_response({"items": [
        {"sku_id": str(r["sku_id"]), "quantity": r["quantity"],
         "unit_price": money(r["price"], r["currency"])} for r in rows]})


@router.get("/items", response_model=Cart, summary="The member's cart",
            operation_id="getCart")
async def get_cart(ctx: Ctx, member: CurrentMember) -> Response:
    return await _cart(ctx, member.id)


@router.put("/items", response_model=Cart, summary="Set a SKU's quantity (0 removes it)",
            operation_id="setCartItem")
async def put_item(ctx: Ctx, member: CurrentMember, body: CartItemIn) -> Response:
    async with ctx.pool.acquire() as conn:
        if body.quantity and not await catalog.bucketed_of(conn, [body.sku_id]):
            raise validation_error("sku_id", f"unknown SKU {body.sku_id}")
        try:
            await carts.put(conn, member.id, body.sku_id, body.quantity)
        except carts.CartFull as exc:
            raise Problem(422, "validation-error", "Validation error",
                          f"sku_id: a cart holds at most {carts.MAX_LINES} SKUs",
                          field="sku_id") from exc
    return await _cart(ctx, member.id)


@router.delete("/items", response_model=Cart,
               summary="Remove a SKU from the cart (`?sku_id=`), or empty it",
               operation_id="removeCartItems")
async def delete_items(
    ctx: Ctx, member: CurrentMember, sku_id: uuid.UUID | None = None
) -> Response:
    async with ctx.pool.acquire() as conn:
        await carts.remove(conn, member.id, sku_id)
    return await _cart(ctx, member.id)
