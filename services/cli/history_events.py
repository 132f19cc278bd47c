"""The history generator's recent past: the rows that live only as long as their retention.

For an order young enough, the published outbox rows of its events (orders, payments,
membership), the inbox rows of the consumers that applied them, and the stored answers of
its checkout (orders) and its payment calls (payments). Older orders have none: the purges
(services/common/purge.py) would have removed them. Pure: no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.common.v1.money_pb2 import Money
from marketplace.events.v1 import events_pb2 as ev

from services.cli.history_model import CURRENCY, Chunk, Placed, payment_status, request_hash
from services.common import outbox
from services.membership import loyalty
from services.orders import messages, views
from services.orders.domain.order import CancelReason, Order, OrderStatus
from services.orders.saga import CheckoutRequest
from services.payments.commands import CapturePayment
from services.payments.domain.payment import PaymentStatus
from services.payments.service import to_proto
from services.payments.store import PaymentRow

# Published this long after the commit, applied by a consumer this long after publishing.
RELAY_DELAY = timedelta(milliseconds=40)
CONSUMER_DELAY = timedelta(milliseconds=60)
KEY_TTL = timedelta(hours=24)  # orders' idempotency_keys.expires_at default


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """The oldest moment each kind of row is still kept (now minus its retention)."""

    outbox: datetime
    inbox: datetime
    order_keys: datetime
    payment_keys: datetime
    gmv_seconds: datetime


def recent_from(cut: Cutoffs) -> datetime:
    """Orders placed before this leave no retained row (a day's margin covers refunds, made
    up to 10 hours after the order, and the relay's and consumers' delays)."""
    return min(cut.outbox, cut.inbox, cut.order_keys - KEY_TTL, cut.payment_keys,
               cut.gmv_seconds) - timedelta(days=1)


# The tables whose rows live only as long as their retention.
RETAINED = (".outbox", ".inbox", ".idempotency_keys")


def add_recent(out: Chunk, cut: Cutoffs) -> None:
    """Every retained row of the chunk's orders; per-second GMV older than kept is dropped."""
    oldest = min(cut.outbox, cut.inbox, cut.order_keys, cut.payment_keys)
    for p in out.orders:
        if (p.refunded_at or p.settled_at) >= oldest:
            _order_events(out, p, cut)
            _answers(out, p, cut)
    seconds = out.writes.seconds
    for second in [s for s in seconds if s < cut.gmv_seconds]:
        del seconds[second]


def _order(p: Placed) -> Order:
    """The order as orders' own code sees it, for its event bodies and stored answer."""
    cancelled = p.status == OrderStatus.CANCELLED
    return Order(
        id=p.id, member_id=p.member_id, status=p.status, subtotal=p.subtotal,
        discount=p.discount, points_redeemed=p.points, total=p.total, currency=CURRENCY,
        payment_token=p.token, payment_id=p.payment_id,
        cancel_reason=CancelReason.PAYMENT_DECLINED if cancelled else None,
        idempotency_key=p.key, payment_deadline=p.created_at, points_pending=False,
        created_at=p.created_at, lines=p.lines, refunded=p.refunded)


def _ts(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _payment_event(p: Placed, status: PaymentStatus, at: datetime) -> ev.PaymentChanged:
    captured = 0 if status == PaymentStatus.FAILED else p.total
    return ev.PaymentChanged(
        payment_id=str(p.payment_id), order_id=str(p.id), member_id=str(p.member_id),
        status=status.value, amount=Money(amount=p.total, currency=CURRENCY),
        captured=captured, refunded=p.refunded if status != PaymentStatus.CAPTURED else 0,
        decline_code="card_declined" if captured == 0 else "", occurred_at=_ts(at))


def _order_events(out: Chunk, p: Placed, cut: Cutoffs) -> None:
    order = _order(p)
    placed = messages.placed(order)
    if p.status == OrderStatus.CANCELLED:
        settled: tuple[str, Message] = ("orders.order.cancelled", messages.cancelled(order))
        settled[1].cancelled_at.FromDatetime(p.settled_at)  # type: ignore[attr-defined]
        paid = ("payments.payment.failed", _payment_event(p, PaymentStatus.FAILED, p.settled_at))
    else:
        settled = ("orders.order.confirmed", messages.confirmed(order))
        settled[1].confirmed_at.FromDatetime(p.settled_at)  # type: ignore[attr-defined]
        paid = ("payments.payment.captured",
                _payment_event(p, PaymentStatus.CAPTURED, p.settled_at))
    events = [
        ("orders", "orders.order.placed", str(p.id), placed, p.created_at),
        ("orders", *settled[:1], str(p.id), settled[1], p.settled_at),
        ("payments", paid[0], str(p.payment_id), paid[1], p.settled_at),
    ]
    if p.earned:
        events.append(("membership", loyalty.POINTS_CHANGED, str(p.member_id),
                       loyalty.points_changed(member_id=p.member_id, delta=p.earned,
                                              balance=p.earn_balance, reason="earn",
                                              order_id=p.id), p.settled_at))
    if p.refunded_at is not None:
        refund = messages.refunded(order, amount=p.refunded, refunded_total=p.refunded)
        refund.refunded_at.FromDatetime(p.refunded_at)
        events.append(("orders", "orders.order.refunded", str(p.id), refund, p.refunded_at))
        events.append(("payments", "payments.payment.refunded", str(p.payment_id),
                       _payment_event(p, payment_status(p), p.refunded_at), p.refunded_at))
    for source, subject, aggregate, message, at in events:
        _event(out, cut, source, subject, aggregate, message, at, p.id)


# Who applies which events (the consumers' inbox rows), by subject.
CONSUMERS: dict[str, tuple[str, ...]] = {
    "orders.order.placed": ("analytics.analytics-orders",),
    "orders.order.cancelled": ("analytics.analytics-orders",),
    "orders.order.confirmed": ("analytics.analytics-orders", "membership.membership-orders"),
    "orders.order.refunded": ("analytics.analytics-orders", "membership.membership-orders"),
    "payments.payment.captured": ("analytics.analytics-payments",),
    "payments.payment.failed": ("analytics.analytics-payments",),
    "payments.payment.refunded": ("analytics.analytics-payments",),
}


def _event(out: Chunk, cut: Cutoffs, source: str, subject: str, aggregate: str,
           message: Message, at: datetime, order_id: uuid.UUID) -> None:
    event_id = uuid.uuid5(order_id, subject)  # one of each subject per order
    published = at + RELAY_DELAY
    if published >= cut.outbox:
        row = outbox.pending(source=source, subject=subject, aggregate_id=aggregate,
                             message=message, event_id=event_id)
        headers = row.headers | {"ce-time": at.isoformat().replace("+00:00", "Z")}
        out.add(f"{source}.outbox", (event_id, subject, aggregate, row.payload,
                                     orjson.dumps(headers).decode(), at, published))
    processed = published + CONSUMER_DELAY
    if processed >= cut.inbox:
        for consumer in CONSUMERS.get(subject, ()):
            schema, name = consumer.split(".", 1)
            out.add(f"{schema}.inbox", (name, event_id, subject, processed))


def _answers(out: Chunk, p: Placed, cut: Cutoffs) -> None:
    """The checkout's stored answer (orders) and the sale's answers (payments)."""
    if p.created_at + KEY_TTL >= cut.order_keys:
        request = CheckoutRequest(items=tuple((x.sku_id, x.quantity) for x in p.lines),
                                  payment_token=p.token, points_to_redeem=p.points)
        settled = _order(p) if p.refunded_at is None else _order_at_checkout(p)
        reply = views.checkout_reply(settled)
        out.add("orders.idempotency_keys", (
            p.member_id, p.key, request.fingerprint(), "done", p.id, reply.status, reply.body,
            p.created_at, p.created_at + KEY_TTL))
    if p.settled_at < cut.payment_keys:
        return
    failed = p.status == OrderStatus.CANCELLED
    status = PaymentStatus.FAILED if failed else PaymentStatus.CAPTURED
    row = PaymentRow(
        id=p.payment_id, seq=0, order_id=p.id, member_id=p.member_id, merchant_id=p.merchant_id,
        status=status, currency=CURRENCY, amount=p.total, captured=0 if failed else p.total,
        refunded=0, commission=0, decline_code=None, processor_ref=None, request_hash="",
        created_at=p.settled_at)
    answer = to_proto(row).SerializeToString()
    out.add("payments.idempotency_keys",
            ("Authorize", f"auth:{p.id}", request_hash(p), p.payment_id, answer, p.settled_at))
    if not failed:
        capture = CapturePayment(key=f"capture:{p.id}", payment_id=p.payment_id, amount=0)
        out.add("payments.idempotency_keys", ("Capture", capture.key, capture.fingerprint(),
                                              p.payment_id, answer, p.settled_at))


def _order_at_checkout(p: Placed) -> Order:
    """A refunded order as its checkout answered it: CONFIRMED, nothing refunded yet."""
    from dataclasses import replace

    return replace(_order(p), status=OrderStatus.CONFIRMED, refunded=0)
