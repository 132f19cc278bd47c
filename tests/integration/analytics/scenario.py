"""A random but reproducible peak-day slice as events, with its sums computed independently."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
from google.protobuf.message import Message
from marketplace.events.v1 import events_pb2 as ev

from services.analytics.rebuild import PROJECTIONS
from tests.integration.analytics.factories import cny, ts

REGIONS = ["CN-11", "CN-31", "CN-44", "CN-33", "CN-51"]
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54"]


@dataclass(frozen=True)
class Sent:
    subject: str
    event_id: uuid.UUID
    message: Message


@dataclass
class Scenario:
    events: list[Sent] = field(default_factory=list)
    gmv: int = 0
    refunds: int = 0
    orders: int = 0
    by_merchant: Counter[str] = field(default_factory=Counter)
    payments_ok: int = 0
    payments: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # each order's final status

    def add(self, subject: str, message: Message) -> None:
        self.events.append(Sent(subject, uuid.uuid4(), message))


def generate(n_orders: int, *, start: datetime, seed: int = 11) -> Scenario:
    """Members, merchants, orders (confirmed, cancelled, refunded in part or in full) and
    their payments.

    Each order's events stay in causal order; orders interleave. Times fall within
    [start, start + 50 min)."""
    rnd = random.Random(seed)
    s = Scenario()
    members = [str(uuid.uuid4()) for _ in range(max(n_orders // 4, 10))]
    for m in members:
        s.add("membership.member.registered", ev.MemberRegistered(
            member_id=m, age_band=rnd.choice(AGE_BANDS), region=rnd.choice(REGIONS),
            gender=rnd.choice("FMX"), registered_at=ts(start)))
    merchants = [str(uuid.uuid4()) for _ in range(6)]
    for mid in merchants:
        s.add("orders.merchant.created", ev.MerchantChanged(
            merchant_id=mid, name=f"m-{mid[:4]}", api_key_hash=uuid.uuid4().hex,
            occurred_at=ts(start)))
    skus = [(str(uuid.uuid4()), str(uuid.uuid4()), rnd.choice(merchants),
             rnd.choice(["phones", "shoes", "tea"])) for _ in range(40)]
    for _ in range(n_orders):
        _order(s, rnd, rnd.choice(members), rnd.sample(skus, rnd.randint(1, 3)),
               start + timedelta(seconds=rnd.uniform(0, 3000)))
    return s


def _order(
    s: Scenario, rnd: random.Random, member: str, skus: list[tuple[str, str, str, str]],
    at: datetime,
) -> None:
    oid, pid = str(uuid.uuid4()), str(uuid.uuid4())
    lines = []
    for sku, product, merchant, category in skus:
        qty, price = rnd.randint(1, 4), rnd.randint(100, 200_000)
        lines.append(ev.OrderLine(sku_id=sku, product_id=product, merchant_id=merchant,
                                  category=category, quantity=qty, unit_price=price,
                                  line_total=qty * price))
    total = sum(ln.line_total for ln in lines)
    s.add("orders.order.placed", ev.OrderPlaced(
        order_id=oid, member_id=member, lines=lines, subtotal=cny(total), discount=cny(0),
        total=cny(total), placed_at=ts(at)))
    s.payments += 1
    if rnd.random() < 0.2:
        s.add("payments.payment.failed", ev.PaymentChanged(
            payment_id=pid, order_id=oid, member_id=member, status="FAILED",
            amount=cny(total), decline_code="card_declined", occurred_at=ts(at)))
        s.add("orders.order.cancelled", ev.OrderCancelled(
            order_id=oid, member_id=member, reason="payment_declined", cancelled_at=ts(at)))
        s.statuses["CANCELLED"] += 1
        return
    s.payments_ok += 1
    s.add("payments.payment.captured", ev.PaymentChanged(
        payment_id=pid, order_id=oid, member_id=member, status="CAPTURED", amount=cny(total),
        captured=total, occurred_at=ts(at)))
    s.add("orders.order.confirmed", ev.OrderConfirmed(
        order_id=oid, member_id=member, lines=lines, total=cny(total), payment_id=pid,
        confirmed_at=ts(at)))
    s.gmv += total
    s.orders += 1
    for ln in lines:
        s.by_merchant[ln.merchant_id] += ln.line_total
    s.statuses[_refunds(s, rnd, oid, member, pid, total, at) if rnd.random() < 0.15
               else "CONFIRMED"] += 1


def _refunds(
    s: Scenario, rnd: random.Random, oid: str, member: str, pid: str, total: int, at: datetime
) -> str:
    """Refunds of a confirmed order; the status they leave it in."""
    if rnd.random() < 0.5:  # an event from before partial refunds: one, always the end
        amount = total if rnd.random() < 0.5 else rnd.randint(1, total)
        s.add("orders.order.refunded", ev.OrderRefunded(
            order_id=oid, member_id=member, refunded=cny(amount), payment_id=pid,
            refunded_at=ts(at + timedelta(seconds=rnd.uniform(1, 300)))))
        s.refunds += amount
        return "REFUNDED"
    running = 0  # partial refunds with the running total, the last one sometimes the rest
    for _ in range(rnd.randint(1, 3)):
        amount = total - running if rnd.random() < 0.3 else rnd.randint(1, total - running)
        running += amount
        at += timedelta(seconds=rnd.uniform(1, 300))
        s.add("orders.order.refunded", ev.OrderRefunded(
            order_id=oid, member_id=member, refunded=cny(amount), payment_id=pid,
            refunded_at=ts(at), refunded_total=cny(running)))
        s.refunds += amount
        if running == total:
            return "REFUNDED"
    return "CONFIRMED"


# Columns that say when a row was written, not what it holds.
_WRITE_TIMES = {"updated_at"}


Rows = dict[str, list[tuple[str, ...]]]


async def dump(conn: asyncpg.Connection, schema: str = "analytics") -> Rows:
    """Every projection table's rows, sorted, without write timestamps."""
    tables: Rows = {}
    for table in PROJECTIONS:
        rows = await conn.fetch(f"SELECT * FROM {schema}.{table}")
        tables[table] = sorted(
            tuple(str(v) for k, v in r.items() if k not in _WRITE_TIMES) for r in rows
        )
    return tables
