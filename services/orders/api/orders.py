"""Checkout, order history and cancellation for the signed-in member."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from services.common import idempotency
from services.common.errors import Problem, not_found, problems, validation_error
from services.common.inputs import QueryInt64, Text
from services.orders import saga, settle
from services.orders.api.deps import Ctx, CurrentMember, decode_cursor, encode_cursor
from services.orders.api.schemas import Order, OrderPage, PlaceOrderIn
from services.orders.clients import Rejected, Unavailable
from services.orders.store import orders as store
from services.orders.views import json_response, order_json

router = APIRouter(prefix="/v1/orders", tags=["orders"])

_CHECKOUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"model": Order, "description": "paid: CONFIRMED"},
    202: {"model": Order, "description": "payment outcome unknown: PENDING, settled later"},
    **problems(402, 409, 422, 429, notes={
        402: "declined: CANCELLED; the order is in `order`",
        409: "out of stock (no order), the key is in flight, or `cart-in-checkout`: another "
             "checkout took the cart's lines first (no order)",
        422: "invalid body (`from_cart` with an empty cart), or the Idempotency-Key reused "
             "with another body",
        429: "too many checkouts by the member or of a hot SKU",
    }, members={402: {"order": {"$ref": "#/components/schemas/Order"}}}),
}
PlacingKey = Annotated[str, Depends(idempotency.key_header())]


@router.post("", status_code=201, responses=_CHECKOUT_RESPONSES, summary="Place an order",
             operation_id="placeOrder")
async def place_order(
    ctx: Ctx, member: CurrentMember, idempotency_key: PlacingKey, body: PlaceOrderIn,
) -> Response:
    """Reserve stock, charge the card and answer with the order; replays repeat the answer."""
    if (body.items is None) == (not body.from_cart):
        raise validation_error("items", "give exactly one of `items` and `from_cart: true`")
    request = saga.CheckoutRequest(
        items=tuple((item.sku_id, item.quantity) for item in body.items or ()),
        payment_token=body.payment.token, points_to_redeem=body.points_to_redeem,
        from_cart=body.from_cart,
    )
    reply = await saga.place_order(ctx, member=member, request=request,
                                   idempotency_key=idempotency_key)
    return Response(content=reply.body, status_code=reply.status, media_type=reply.media_type)


@router.get("", response_model=OrderPage, summary="The member's orders, newest first",
            operation_id="listOrders")
async def list_orders(
    ctx: Ctx, member: CurrentMember,
    limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=512)] = None,
) -> Response:
    after = None
    if cursor is not None:
        pos = decode_cursor(cursor)
        try:
            after = (datetime.fromisoformat(pos["t"]), uuid.UUID(pos["i"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise validation_error("cursor", "not a cursor returned by this endpoint") from exc
    async with ctx.pool.acquire() as conn:
        rows = await store.list_orders(conn, member_id=member.id, after=after, limit=limit)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor({"t": last.created_at.isoformat(), "i": str(last.id)})
    return json_response({"items": [order_json(o) for o in page], "next_cursor": next_cursor})


@router.get("/{order_id}", response_model=Order, responses=problems(404),
            summary="One of the member's orders", operation_id="getOrder")
async def get_order(ctx: Ctx, member: CurrentMember, order_id: uuid.UUID) -> Response:
    async with ctx.pool.acquire() as conn:
        order = await store.get_order(conn, order_id, member_id=member.id)
    if order is None:  # another member's order is as invisible as a missing one
        raise not_found(f"order {order_id}")
    return json_response(order_json(order))


@router.post("/{order_id}/cancel", response_model=Order, responses=problems(404, 409),
             summary="Cancel or refund an order", operation_id="cancelOrder")
async def cancel_order(ctx: Ctx, member: CurrentMember, order_id: uuid.UUID) -> Response:
    """PENDING → CANCELLED; CONFIRMED → refunded and REFUNDED; a final order stays as it is."""
    async with ctx.pool.acquire() as conn:
        order = await store.get_order(conn, order_id, member_id=member.id)
    if order is None:
        raise not_found(f"order {order_id}")
    try:
        order = await settle.cancel_by_member(ctx, order)
    except Unavailable as exc:
        raise Problem(503, "overloaded", "Payments unavailable",
                      "the payment could not be voided or refunded now; retry shortly",
                      headers={"Retry-After": "2"}) from exc
    except Rejected as exc:
        raise Problem(409, "conflict", "Cannot cancel", exc.message) from exc
    return json_response(order_json(order))
