"""Settling a placed order: drive its payment, then confirm, cancel or refund it.

Used by the checkout request, the recovery loop and the cancel endpoint alike; every
payments call carries a key derived from the order id, so running a step twice is safe.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import UTC, datetime

import asyncpg
import grpc
from marketplace.payments.v1.payments_pb2 import PaymentStatus as PS

from services.common import outbox
from services.orders import faults, messages, views
from services.orders import metrics as orders_metrics
from services.orders.clients import NotFound, Payment, Rejected, Unavailable
from services.orders.context import Context
from services.orders.domain.order import CancelReason, Order, OrderEvent, OrderStatus, transition
from services.orders.store import orders as store
from services.orders.store.settling import Settled, Settling

log = logging.getLogger(__name__)

SOURCE = "orders"
# A definite "no" to an authorization: the card or the request was refused.
_DECLINING_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})


async def drive(ctx: Context, order: Order, *, ask_first: bool) -> Order:
    """Move a PENDING order as far as payments allows; raises Unavailable when it cannot tell.

    `ask_first` looks up what payments already did (recovery); the checkout request skips it.
    """
    payment = await ctx.payments.find(order_id=order.id) if ask_first else None
    if ask_first and datetime.now(UTC) >= order.payment_deadline:
        return await _expire(ctx, order, payment)
    if payment is None:
        if order.points_redeemed:
            try:
                await ctx.membership.reserve_points(
                    order_id=order.id, member_id=order.member_id, points=order.points_redeemed)
            except Rejected as exc:
                log.info("points not reserved",
                         extra={"order_id": str(order.id), "error": str(exc)})
                return await cancel(ctx, order, reason=CancelReason.POINTS_UNAVAILABLE)
        try:
            payment = await ctx.pipeline.pay(order, retry=ask_first)
        except Rejected as exc:
            if exc.code not in _DECLINING_CODES:
                raise Unavailable(str(exc)) from exc
            return await cancel(ctx, order, reason=CancelReason.PAYMENT_DECLINED)
        await faults.point(ctx.settings, "after_authorize")
    return await _follow(ctx, order, payment)


async def _follow(ctx: Context, order: Order, payment: Payment) -> Order:
    if payment.status == PS.PAYMENT_STATUS_AUTHORIZED:
        current = await _load(ctx, order.id)
        if current.status != OrderStatus.PENDING:  # cancelled meanwhile: let the card go
            await ctx.payments.void(order_id=order.id, payment_id=payment.id)
            return current
        try:
            payment = await ctx.payments.capture(order_id=order.id, payment_id=payment.id)
        except Rejected as exc:  # e.g. voided meanwhile; the next look-up tells what it became
            raise Unavailable(str(exc)) from exc
        await faults.point(ctx.settings, "after_capture")
    status = payment.status
    if status in (PS.PAYMENT_STATUS_CAPTURED, PS.PAYMENT_STATUS_PARTIALLY_REFUNDED):
        return await confirm(ctx, order, payment)
    if status == PS.PAYMENT_STATUS_FAILED:
        return await cancel(ctx, order, reason=CancelReason.PAYMENT_DECLINED, payment_id=payment.id)
    if status == PS.PAYMENT_STATUS_VOIDED:
        return await cancel(ctx, order, reason=CancelReason.PAYMENT_TIMEOUT, payment_id=payment.id)
    if status == PS.PAYMENT_STATUS_REFUNDED:
        return await cancel(ctx, order, reason=CancelReason.PAYMENT_REFUNDED, payment_id=payment.id)
    raise Unavailable(f"payment {payment.id} has an unexpected status {status}")


async def _expire(ctx: Context, order: Order, payment: Payment | None) -> Order:
    """Past the payment deadline: void what was only authorized, keep what was captured."""
    if payment is None:
        return await cancel(ctx, order, reason=CancelReason.PAYMENT_TIMEOUT)
    if payment.status == PS.PAYMENT_STATUS_AUTHORIZED:
        payment = await ctx.payments.void(order_id=order.id, payment_id=payment.id)
        return await cancel(ctx, order, reason=CancelReason.PAYMENT_TIMEOUT, payment_id=payment.id)
    return await _follow(ctx, order, payment)


async def _load(ctx: Context, order_id: uuid.UUID) -> Order:
    async with ctx.pool.acquire() as conn:
        order = await store.get_order(conn, order_id)
    assert order is not None, f"order {order_id} vanished"
    return order


async def confirm(ctx: Context, order: Order, payment: Payment) -> Order:
    """PENDING → CONFIRMED with the event and the stored checkout answer (batched with the
    other checkouts settling now), then commit points.

    A payment partly refunded before the order was confirmed (an admin refund while the
    order waited for recovery) is confirmed with that refund, announced as one.
    """
    status = transition(OrderStatus(order.status), OrderEvent.PAYMENT_CAPTURED)
    refunded = min(max(payment.refunded, 0), order.total)
    done = dataclasses.replace(order, status=str(status), payment_id=uuid.UUID(payment.id),
                               points_pending=order.points_redeemed > 0, refunded=refunded)
    events = [outbox.pending(source=SOURCE, subject="orders.order.confirmed",
                             aggregate_id=str(order.id), message=messages.confirmed(done))]
    if refunded:
        events.append(outbox.pending(
            source=SOURCE, subject="orders.order.refunded", aggregate_id=str(order.id),
            message=messages.refunded(done, amount=refunded, refunded_total=refunded)))
    if await ctx.pipeline.settle(_settling(done, events)) != Settled.DONE:
        return await _captured_too_late(ctx, order.id, payment)
    orders_metrics.SETTLED.labels("confirmed", "").inc()
    orders_metrics.GMV.labels(done.currency).inc(done.total)
    await settle_points(ctx, done)
    return done


def _settling(done: Order, events: list[outbox.Pending]) -> Settling:
    reply = views.checkout_reply(done)
    return Settling(order=done, reply_status=reply.status, reply_body=reply.body,
                    events=tuple(events))


async def _captured_too_late(ctx: Context, order_id: uuid.UUID, payment: Payment) -> Order:
    """Someone else settled the order first; money captured for a cancelled order goes back."""
    current = await _load(ctx, order_id)
    if current.status == OrderStatus.CANCELLED:
        log.warning("payment captured for a cancelled order; refunding",
                    extra={"order_id": str(order_id), "payment_id": payment.id})
        await ctx.payments.refund(order_id=order_id, payment_id=payment.id,
                                  reason="order_cancelled")
    return current


async def cancel(
    ctx: Context, order: Order, *, reason: CancelReason, payment_id: str | None = None
) -> Order:
    """PENDING → CANCELLED: cart lines and stock back, event, stored checkout answer; then
    release points. The cart lines come back so that the member can pay another way."""
    status = transition(OrderStatus(order.status), reason.event)
    done = dataclasses.replace(
        order, status=str(status), cancel_reason=reason,
        payment_id=uuid.UUID(payment_id) if payment_id else order.payment_id,
        points_pending=order.points_redeemed > 0)
    item = _settling(done, [outbox.pending(
        source=SOURCE, subject="orders.order.cancelled", aggregate_id=str(order.id),
        message=messages.cancelled(done))])
    settled = await ctx.pipeline.settle(item)
    if settled == Settled.BUCKETS:  # units of a bucketed SKU go back into its buckets
        settled = await ctx.pipeline.settles.settle_refilled(item)
    if settled != Settled.DONE:
        return await _load(ctx, order.id)
    orders_metrics.SETTLED.labels("cancelled", str(reason)).inc()
    await settle_points(ctx, done)
    return done


async def settle_points(ctx: Context, order: Order) -> None:
    """Commit (paid) or release (cancelled) held points; on failure recovery tries again."""
    if not order.points_pending:
        return
    try:
        if order.status == OrderStatus.CANCELLED:
            await ctx.membership.release_points(order.id)
        else:
            await ctx.membership.commit_points(order.id)
    except NotFound:
        pass  # nothing was ever reserved for this order
    except (Unavailable, Rejected) as exc:
        log.warning("points not settled yet", extra={"order_id": str(order.id), "error": str(exc)})
        return
    async with ctx.pool.acquire() as conn:
        await store.clear_points_pending(conn, order.id)


async def mark_refunded(conn: asyncpg.Connection, order: Order) -> bool:
    """CONFIRMED → REFUNDED in full inside the caller's transaction, stock back.

    The event carries what was still unrefunded (earlier partial refunds were announced on
    their own) and the order's total as the running total. False if it was not CONFIRMED.
    """
    if order.status != OrderStatus.CONFIRMED:
        return False
    status = transition(OrderStatus.CONFIRMED, OrderEvent.REFUNDED)
    if not await store.change_status(conn, order.id, was=order.status, now=str(status),
                                     refunded=order.total):
        return False
    await store.return_sold(conn, order.lines)
    message = messages.refunded(order, amount=order.total - order.refunded,
                                refunded_total=order.total)
    await outbox.add_event(conn, source=SOURCE, subject="orders.order.refunded",
                           aggregate_id=str(order.id), message=message)
    return True


async def cancel_by_member(ctx: Context, order: Order) -> Order:
    """Cancel a PENDING order, or refund a CONFIRMED one; a final order is returned as it is."""
    if order.status == OrderStatus.PENDING:
        payment = await ctx.payments.find(order_id=order.id)
        if payment is not None and payment.status in (
            PS.PAYMENT_STATUS_CAPTURED, PS.PAYMENT_STATUS_PARTIALLY_REFUNDED
        ):
            order = await confirm(ctx, order, payment)
        else:
            if payment is not None and payment.status == PS.PAYMENT_STATUS_AUTHORIZED:
                await ctx.payments.void(order_id=order.id, payment_id=payment.id)
            order = await cancel(ctx, order, reason=CancelReason.CANCELLED_BY_MEMBER,
                                 payment_id=payment.id if payment else None)
    if order.status == OrderStatus.CONFIRMED:
        return await refund(ctx, order)
    return order


async def refund(ctx: Context, order: Order) -> Order:
    """Refund a CONFIRMED order's payment in full, then mark it REFUNDED with its stock back."""
    assert order.payment_id is not None, "a confirmed order has a payment"
    await ctx.payments.refund(order_id=order.id, payment_id=str(order.payment_id),
                              reason=CancelReason.CANCELLED_BY_MEMBER)
    async with ctx.pool.acquire() as conn, conn.transaction():
        # Locked and read again: a partial refund may have landed since `order` was read.
        current = await store.get_order(conn, order.id, for_update=True)
        assert current is not None
        await mark_refunded(conn, current)
    return await _load(ctx, order.id)
