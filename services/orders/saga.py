"""Checkout: the orchestrated saga behind POST /v1/orders (see ARCHITECTURE.md, Checkout).

Validate and price, then one transaction reserves the stock and records the PENDING
order, its idempotency key and `orders.order.placed`; payments then settles it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from services.common import outbox
from services.common.auth import Member
from services.common.errors import Problem, unauthorized, validation_error
from services.orders import messages, settle, views
from services.orders.clients import MemberInfo, NotFound, Rejected, Unavailable
from services.orders.context import Context
from services.orders.domain.order import OrderStatus
from services.orders.domain.pricing import PricedLine, PricingError, price_order
from services.orders.store import catalog, idempotency
from services.orders.store import orders as store
from services.orders.store.orders import Line, Order, OutOfStock
from services.orders.views import Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """The validated body of POST /v1/orders."""

    items: tuple[tuple[uuid.UUID, int], ...]  # (sku_id, quantity)
    payment_token: str
    points_to_redeem: int

    def fingerprint(self) -> str:
        """Same body, same hash, whatever the JSON spelling (key order, whitespace)."""
        canonical = orjson.dumps(
            {"items": [[str(s), q] for s, q in self.items], "token": self.payment_token,
             "points": self.points_to_redeem},
        )
        return hashlib.sha256(canonical).hexdigest()


async def place_order(
    ctx: Context, *, member: Member, request: CheckoutRequest, idempotency_key: str
) -> Reply:
    """Answer a checkout, or replay the answer already given for this key."""
    async with ctx.pool.acquire() as conn:
        held = await idempotency.claim(
            conn, member_id=member.id, key=idempotency_key, request_hash=request.fingerprint(),
            claim_timeout_s=ctx.settings.idempotency_claim_timeout_s)
    if held is not None:
        return _replay(held, request)
    try:
        order = await _open(ctx, member=member, request=request, key=idempotency_key)
    except BaseException:
        # Nothing was created under the key: give it back so a retry runs afresh.
        async with ctx.pool.acquire() as conn:
            await idempotency.release(conn, member_id=member.id, key=idempotency_key)
        raise
    try:
        order = await settle.drive(ctx, order, ask_first=False)
    except Unavailable as exc:
        log.warning("payment outcome unknown; order left to recovery",
                    extra={"order_id": str(order.id), "error": str(exc)})
    return views.checkout_reply(order)


def _replay(row: asyncpg.Record, request: CheckoutRequest) -> Reply:
    if row["request_hash"] != request.fingerprint():
        raise Problem(422, "idempotency-key-reused", "Idempotency key reused",
                      "this Idempotency-Key was used with a different request body; "
                      "use a new key for a new order", field="Idempotency-Key")
    if row["status"] != "done":
        raise Problem(409, "idempotency-key-in-flight", "Request in progress",
                      "a request with this Idempotency-Key is still being processed; "
                      "retry shortly", headers={"Retry-After": "1"},
                      order_id=str(row["order_id"]) if row["order_id"] else None)
    return Reply(row["response_status"], bytes(row["response_body"]))


async def _open(ctx: Context, *, member: Member, request: CheckoutRequest, key: str) -> Order:
    """Steps 1 and 2: price the order and commit it PENDING with its stock held."""
    order = await _price(ctx, member=member, request=request, key=key)
    now = datetime.now(UTC)
    async with ctx.pool.acquire() as conn, conn.transaction():
        try:
            await store.reserve_stock(conn, order.lines)
        except OutOfStock as exc:
            raise Problem(409, "out-of-stock", "Out of stock",
                          f"SKU {exc.sku_id} has fewer than {exc.quantity} units in stock",
                          sku_id=str(exc.sku_id)) from exc
        await store.insert_order(
            conn, order, retry_at=now + timedelta(seconds=ctx.settings.recovery_grace_s))
        await idempotency.attach_order(conn, member_id=member.id, key=key, order_id=order.id)
        await outbox.add_event(conn, source=settle.SOURCE, subject="orders.order.placed",
                               aggregate_id=str(order.id), message=messages.placed(order))
    return order


async def _price(ctx: Context, *, member: Member, request: CheckoutRequest, key: str) -> Order:
    sku_ids = [sku for sku, _ in request.items]
    async with ctx.pool.acquire() as conn:
        skus = await catalog.skus_for_checkout(conn, sku_ids)
    for i, sku_id in enumerate(sku_ids):
        if sku_id not in skus:
            raise validation_error(f"items[{i}].sku_id", f"unknown SKU {sku_id}")
    currencies = {skus[s]["currency"] for s in sku_ids}
    if len(currencies) > 1:
        raise validation_error("items", "all SKUs of one order must be priced in one currency")
    member_info = await _member(ctx, member)
    priced = [
        PricedLine(sku_id=s, product_id=skus[s]["product_id"], merchant_id=skus[s]["merchant_id"],
                   quantity=q, unit_price=skus[s]["price"])
        for s, q in request.items
    ]
    try:
        quote = price_order(priced, discount_bps=member_info.discount_bps,
                            points_to_redeem=request.points_to_redeem,
                            points_balance=member_info.points_balance)
    except PricingError as exc:
        raise validation_error(exc.field, exc.message) from exc
    now = datetime.now(UTC)
    lines = tuple(
        Line(sku_id=q.sku_id, product_id=q.product_id, merchant_id=q.merchant_id,
             category=skus[q.sku_id]["category"], quantity=q.quantity,
             unit_price=q.unit_price, line_total=q.line_total)
        for q in quote.lines
    )
    return Order(
        id=uuid.uuid4(), member_id=member.id, status=str(OrderStatus.PENDING),
        subtotal=quote.subtotal, discount=quote.discount, points_redeemed=quote.points_redeemed,
        total=quote.total, currency=currencies.pop(), payment_token=request.payment_token,
        payment_id=None, cancel_reason=None, idempotency_key=key,
        payment_deadline=now + timedelta(seconds=ctx.settings.payment_deadline_s),
        points_pending=False, created_at=now, lines=lines,
    )


async def _member(ctx: Context, member: Member) -> MemberInfo:
    try:
        return await ctx.membership.get_member(member.id)
    except NotFound as exc:
        raise unauthorized("the member behind this token no longer exists") from exc
    except (Unavailable, Rejected) as exc:
        log.warning("membership unavailable", extra={"error": str(exc)})
        raise Problem(503, "overloaded", "Membership unavailable",
                      "member discounts could not be looked up; retry shortly",
                      headers={"Retry-After": "1"}) from exc
