"""Checkout: the orchestrated saga behind POST /v1/orders (see ARCHITECTURE.md, Checkout).

Validate and price, then one transaction reserves the stock and records the PENDING
order, its idempotency key and `orders.order.placed`; payments then settles it.
"""

from __future__ import annotations

import dataclasses
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
from services.orders import faults, messages, settle, views
from services.orders.clients import MemberInfo, NotFound, Rejected, Unavailable
from services.orders.context import Context
from services.orders.domain.order import Line, Order, OrderStatus
from services.orders.domain.pricing import (
    ENTRY_TIER,
    PricedLine,
    PricingError,
    price_order,
    tier_discount_bps,
)
from services.orders.pipeline import Known, Lookup
from services.orders.store import carts, idempotency, placing
from services.orders.store.placing import Outcome
from services.orders.store.stock import StaleHotness
from services.orders.views import Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """The validated body of POST /v1/orders."""

    items: tuple[tuple[uuid.UUID, int], ...]  # (sku_id, quantity); empty when from the cart
    payment_token: str
    points_to_redeem: int
    from_cart: bool = False

    def fingerprint(self) -> str:
        """Same body, same hash, whatever the JSON spelling (key order, whitespace)."""
        canonical = orjson.dumps(
            {"items": [[str(s), q] for s, q in self.items], "token": self.payment_token,
             "points": self.points_to_redeem} | ({"cart": True} if self.from_cart else {}),
        )
        return hashlib.sha256(canonical).hexdigest()


async def place_order(
    ctx: Context, *, member: Member, request: CheckoutRequest, idempotency_key: str
) -> Reply:
    """Answer a checkout, or replay the answer already given for this key."""
    ctx.admission.check_member(member.id)
    try:
        items = request.items or await _cart_items(ctx, member)
    except Problem as refusal:  # e.g. the cart this key's first checkout emptied
        return await _earlier_answer(ctx, member, idempotency_key, request.fingerprint(),
                                     refusal=refusal)
    known = await _unless_known(ctx, [sku for sku, _ in items], member.id)
    hot = [sku for sku, _ in items if ctx.admission.hot.get(sku)]
    short = ctx.admission.known_short(items)
    if short is not None:  # sold out a moment ago; a retry of an earlier checkout replays
        return await _earlier_answer(ctx, member, idempotency_key, request.fingerprint(),
                                     refusal=_out_of_stock(short))
    # The per-SKU gate first: a flash-sale crowd gets its 429 before any general shedding
    # (once every slot is taken, `shedding.CheckoutShedding` refuses before this is reached).
    with ctx.admission.hot_gate.admit(hot), ctx.admission.checkouts.enter():
        return await _checkout(ctx, member=member, request=request, items=items, known=known,
                               idempotency_key=idempotency_key)


class _RateSpent(Exception):
    """The member's checkout rate refused the placing: nothing was written."""


class _KeyHeld(Exception):
    """The idempotency key already has a record: answer from it, create nothing."""

    def __init__(self, row: asyncpg.Record) -> None:
        super().__init__("idempotency key already used")
        self.row = row


async def _checkout(
    ctx: Context, *, member: Member, request: CheckoutRequest,
    items: tuple[tuple[uuid.UUID, int], ...], known: Known | None, idempotency_key: str,
) -> Reply:
    request_hash = request.fingerprint()  # of the body as sent (a cart checkout names no items)
    request = dataclasses.replace(request, items=items)
    with faults.armed():
        try:
            order = await _open(ctx, member=member, request=request, known=known,
                                key=idempotency_key, request_hash=request_hash)
        except _KeyHeld as held:
            return _replay(held.row, request_hash)
        except Problem as refusal:
            # Refused now (stock, points, SKUs changed since): a retry still gets its first
            # answer. Nothing was written under the key, so nothing needs undoing.
            return await _earlier_answer(ctx, member, idempotency_key, request_hash,
                                         refusal=refusal)
        except _RateSpent:
            # The member's checkout rate, counted for the cluster, refused the placing.
            limited = await ctx.admission.member_refused(ctx.pool, member.id)
            return await _earlier_answer(ctx, member, idempotency_key, request_hash,
                                         refusal=limited)
        await faults.point(ctx.settings, "after_reserve")
        try:
            order = await settle.drive(ctx, order, ask_first=False)
        except Unavailable as exc:
            log.warning("payment outcome unknown; order left to recovery",
                        extra={"order_id": str(order.id), "error": str(exc)})
        if order.status == OrderStatus.CONFIRMED:
            await faults.point(ctx.settings, "after_confirm")
    return views.checkout_reply(order)


async def _earlier_answer(
    ctx: Context, member: Member, key: str, request_hash: str, *, refusal: Problem
) -> Reply:
    """The answer recorded under the key, else `refusal` (a request refused now)."""
    async with ctx.pool.acquire() as conn:
        row = await idempotency.lookup(conn, member_id=member.id, key=key)
    if row is None:
        raise refusal
    return _replay(row, request_hash)


async def _cart_items(ctx: Context, member: Member) -> tuple[tuple[uuid.UUID, int], ...]:
    async with ctx.pool.acquire() as conn:
        rows = await carts.items(conn, member.id)
    if not rows:
        raise validation_error("from_cart", "the cart is empty")
    return tuple((r["sku_id"], r["quantity"]) for r in rows)


async def _unless_known(ctx: Context, sku_ids: list[uuid.UUID], member_id: uuid.UUID
                        ) -> Known | None:
    """The SKU rows (price, owner, bucketed) and the member's tier, read in one look-up
    batched with the checkouts in flight; remembers which SKUs are hot for a few seconds.

    None when every SKU's hotness is remembered: a flash-sale crowd turned away by the
    gate or the sold-out memory then costs the database nothing; pricing reads them.
    """
    if all(ctx.admission.hot.get(s) is not None for s in sku_ids):
        return None
    # Not for a checkout that would be shed anyway. (Once a SKU is known to be hot, its
    # crowd meets the per-SKU gate's 429 first, in the caller.)
    ctx.admission.checkouts.refuse_if_full()
    known = await ctx.pipeline.look_up(Lookup(tuple(sku_ids), member_id))
    for sku_id, row in known.skus.items():
        ctx.admission.hot.put(sku_id, int(row["bucketed"]))
    return known


def _out_of_stock(sku_id: uuid.UUID, quantity: int | None = None) -> Problem:
    detail = (f"SKU {sku_id} has fewer than {quantity} units in stock" if quantity
              else f"SKU {sku_id} does not have that many units in stock")
    return Problem(409, "out-of-stock", "Out of stock", detail, sku_id=str(sku_id))


def _cart_in_checkout() -> Problem:
    # Another checkout of this cart took its lines first (or the cart changed after it was
    # read): that checkout is the one that pays for them, and this one wrote nothing.
    return Problem(409, "cart-in-checkout", "Cart in checkout",
                   "the cart's lines were taken by another checkout, or changed, while this "
                   "one was placed; nothing was ordered or charged: read the cart again")


def _replay(row: asyncpg.Record, request_hash: str) -> Reply:
    if row["request_hash"] != request_hash:
        raise Problem(422, "idempotency-key-reused", "Idempotency key reused",
                      "this Idempotency-Key was used with a different request body; "
                      "use a new key for a new order", field="Idempotency-Key")
    if row["status"] != "done":
        raise Problem(409, "idempotency-key-in-flight", "Request in progress",
                      "a request with this Idempotency-Key is still being processed; "
                      "retry shortly", headers={"Retry-After": "1"},
                      order_id=str(row["order_id"]) if row["order_id"] else None)
    return Reply(row["response_status"], bytes(row["response_body"]))


async def _open(
    ctx: Context, *, member: Member, request: CheckoutRequest, known: Known | None, key: str,
    request_hash: str,
) -> Order:
    """Steps 1 and 2: price the order, then claim the idempotency key (and for a cart
    order the cart lines it was priced from), reserve the stock and commit the order
    PENDING with `orders.order.placed`, all or nothing: in the placing statement of the
    batch of checkouts in flight, or, when a SKU of it is bucketed, in a transaction that
    takes the units from the buckets first and then runs the same statement.

    Claiming inside that statement costs no commit of its own: a concurrent request with
    the same key waits on the key's row until this one commits (then it finds the order,
    409 in flight) or rolls back (then it proceeds as if first).
    """
    order = await _price(ctx, member=member, request=request, key=key, known=known)
    now = datetime.now(UTC)
    item = placing.Placing(
        order=order, request_hash=request_hash,
        retry_at=now + timedelta(seconds=ctx.settings.recovery_grace_s),
        event=outbox.pending(source=settle.SOURCE, subject="orders.order.placed",
                             aggregate_id=str(order.id), message=messages.placed(order)))
    hot: frozenset[uuid.UUID] | None = frozenset(
        line.sku_id for line in order.lines if ctx.admission.hot.get(line.sku_id))
    for _ in range(_PLACING_ROUNDS):
        if hot is None or hot:  # bucketed (or not known: the transaction looks it up)
            placed = await _placed_reserved(ctx, item, hot=hot)
        else:
            placed = await ctx.pipeline.place(item)
        if placed.outcome == Outcome.STALE:  # bucketed since it was remembered (elsewhere)
            ctx.admission.hot.forget(line.sku_id for line in order.lines)
            hot = None
        elif placed.outcome != Outcome.RETRY and await _placed_or_refused(ctx, order, placed):
            return order
    raise _out_of_stock(order.lines[0].sku_id)  # outrun round after round


# A checkout outrun by its batch neighbours (or by a key purged under it) is placed again.
_PLACING_ROUNDS = 5


async def _placed_reserved(
    ctx: Context, item: placing.Placing, *, hot: frozenset[uuid.UUID] | None
) -> placing.Placed:
    for attempt in (1, 2):
        try:
            return await ctx.pipeline.places.place_reserved(item, hot=hot)
        except StaleHotness:
            if attempt == 2:
                raise
            # A SKU was (un)bucketed since it was remembered (by another replica): look it
            # up now, and let the next checkout read it afresh too.
            hot = None
            ctx.admission.hot.forget(line.sku_id for line in item.order.lines)
    raise AssertionError("unreachable")


async def _placed_or_refused(ctx: Context, order: Order, placed: placing.Placed) -> bool:
    """True when placed; else raise what the checkout answers (False: place it again)."""
    if placed.outcome == Outcome.PLACED:
        return True
    if placed.outcome == Outcome.RATE:
        raise _RateSpent
    if placed.outcome == Outcome.CART:
        raise _cart_in_checkout()
    if placed.outcome == Outcome.SHORT:
        sku = placed.short_sku or order.lines[0].sku_id
        if ctx.admission.hot.get(sku):  # the crowd of a flash sale: hold it off
            ctx.admission.sold_out(sku, placed.short_stock)
        wanted = next((x.quantity for x in order.lines if x.sku_id == sku), None)
        raise _out_of_stock(sku, wanted)
    async with ctx.pool.acquire() as conn:
        held = await idempotency.lookup(conn, member_id=order.member_id,
                                        key=order.idempotency_key, live_only=False)
    if held is None:  # the holder's claim expired and was purged just now: start over
        return False
    raise _KeyHeld(held)


async def _price(
    ctx: Context, *, member: Member, request: CheckoutRequest, key: str, known: Known | None
) -> Order:
    sku_ids = [sku for sku, _ in request.items]
    if known is None:
        known = await ctx.pipeline.look_up(Lookup(tuple(sku_ids), member.id))
    skus = known.skus
    for i, sku_id in enumerate(sku_ids):
        if sku_id not in skus:
            raise validation_error(f"items[{i}].sku_id", f"unknown SKU {sku_id}")
    currencies = {skus[s]["currency"] for s in sku_ids}
    if len(currencies) > 1:
        raise validation_error("items", "all SKUs of one order must be priced in one currency")
    member_info = await _member(ctx, member, redeeming=request.points_to_redeem > 0,
                                known_tier=known.tier)
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
        points_pending=False, created_at=now, lines=lines, from_cart=request.from_cart,
        tier=member_info.tier, discount_bps=member_info.discount_bps,
    )


async def _member(ctx: Context, member: Member, *, redeeming: bool, known_tier: str | None
                  ) -> MemberInfo:
    """The member's tier (and, to redeem points, balance): without points, the tier orders'
    projection knows (`known_tier`, read with the SKUs), asking membership nothing (the
    entry tier before their registration arrives); with points, membership's own answer,
    as strongly consistent as the hold."""
    if not redeeming:
        tier = known_tier or ENTRY_TIER
        return MemberInfo(tier=tier, discount_bps=tier_discount_bps(tier), points_balance=None)
    try:
        return await ctx.membership.get_member(member.id)
    except NotFound as exc:
        raise unauthorized("the member behind this token no longer exists") from exc
    except (Unavailable, Rejected) as exc:
        log.warning("membership unavailable", extra={"error": str(exc)})
        raise Problem(503, "overloaded", "Membership unavailable",
                      "member discounts could not be looked up; retry shortly",
                      headers={"Retry-After": "1"}) from exc
