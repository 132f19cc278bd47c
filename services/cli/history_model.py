"""The history generator's simulation: members buying over time, each order carried through
the rules the services apply to it (pricing, the payment and its journal, points and tiers,
the analytics projection), as rows ready for COPY. Pure: no I/O; the same plan (seed and
end time included) gives the same rows.

Orders are made in time order, a chunk at a time; members keep their state (spend, points,
tier) from chunk to chunk, and their own rows are written once, at the end.

A long history is made in two parts (`Layout`). The past older than every retention is a
block of orders its members place, which the loader copies set-wise in SQL
(history_clone), each copy with members of its own; that is what makes ten million orders
a matter of minutes. The recent past, where outbox, inbox and stored answers live, is
simulated order by order for all members, each copy's members going on from the state the
block left them in.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.analytics.domain import orders as facts
from services.analytics.domain.payments import status_rank
from services.analytics.writes import LineSale, Writes
from services.cli.history_clone import clone_id
from services.membership.domain.points import points_earned
from services.membership.domain.refunds import points_to_reverse
from services.membership.domain.tiers import tier_for_spend
from services.orders.domain.order import CancelReason, Line, OrderStatus
from services.orders.domain.pricing import (
    TIER_DISCOUNT_BPS,
    discount_for,
    max_points_redeemable,
)
from services.orders.settings import OrdersSettings
from services.payments import processor
from services.payments.commands import AuthorizePayment
from services.payments.domain import ledger
from services.payments.domain.payment import PaymentStatus
from services.payments.settings import PaymentsSettings

CURRENCY = "CNY"
COMMISSION_BPS: int = PaymentsSettings.model_fields["commission_bps"].default
PAYMENT_DEADLINE = timedelta(seconds=OrdersSettings.model_fields["payment_deadline_s"].default)
# The first member of a run buys this many of its orders: `GET /v1/orders` of a member with
# a long history is one of the hot paths the growth benchmark measures.
HEAVY_MEMBER_ORDERS = 1_000
# Shares of orders (realistic for a big marketplace, and every path the audit checks).
DECLINED, REFUNDED, PARTLY_REFUNDED, REDEEMING = 0.03, 0.02, 0.01, 0.05
APPROVE, DECLINE = "tok_visa", "tok_chargeDeclined"
REFUND_REASON = "order_cancelled"


@dataclass(frozen=True, slots=True)
class Sku:
    id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID
    category: str
    price: int


@dataclass(frozen=True, slots=True)
class Plan:
    orders: int
    members: int
    seed: int
    start: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class Layout:
    """How a plan's orders are made: `block` orders before `old_until`, placed by
    `block_members` members and written `copies` times (the block and its copies, each with
    its own members), then `recent` orders up to the plan's end, simulated one by one."""

    copies: int
    block: int
    block_members: int
    old_until: datetime
    recent: int

    @property
    def simulated(self) -> int:
        return self.block + self.recent


def layout(plan: Plan, recent_from: datetime, *, block: int) -> Layout:
    """Orders spread evenly over the plan's time; those older than `recent_from` (where no
    retained row lives) made as copies of a block of at most `block` orders."""
    old_until = min(max(recent_from, plan.start), plan.until)
    span = (plan.until - plan.start).total_seconds()
    old = round(plan.orders * (old_until - plan.start).total_seconds() / span) if span else 0
    copies = max(1, min(math.ceil(old / max(block, 1)), plan.members))
    size = old // copies
    return Layout(copies=copies, block=size, block_members=plan.members // copies,
                  old_until=old_until, recent=plan.orders - size * copies)


def new_uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


class Members:
    """Each member's running state; their rows come out at the end (`rows`)."""

    def __init__(self, n: int, start: datetime, rng: random.Random) -> None:
        self.start, self.rng = start, rng
        self.ids: list[uuid.UUID] = []
        self.registered: list[datetime] = []
        self.birth_years: list[int] = []
        self.spend: list[int] = []  # confirmed, net of refunds: the tier follows it
        self.balance: list[int] = []
        self.tier_changed: list[datetime | None] = []
        self.join(n)

    def join(self, n: int) -> None:
        """`n` new members, with no orders yet."""
        rng = self.rng
        self.ids += [new_uuid(rng) for _ in range(n)]
        self.registered += [self.start - timedelta(days=rng.uniform(1, 400)) for _ in range(n)]
        self.birth_years += [rng.randrange(1955, 2005) for _ in range(n)]
        self.spend += [0] * n
        self.balance += [0] * n
        self.tier_changed += [None] * n

    def copy(self, copies: int) -> None:
        """The members so far `copies` times over: copy c of member m has the id
        clone_id(m, c) and m's state, as the block's copies (history_clone) give it."""
        ids = list(self.ids)
        self.ids += [clone_id(m, c) for c in range(1, copies) for m in ids]
        for name in ("registered", "birth_years", "spend", "balance", "tier_changed"):
            values = getattr(self, name)
            values *= copies

    def tier(self, m: int) -> str:
        return tier_for_spend(self.spend[m]).value

    def add_spend(self, m: int, amount: int, at: datetime) -> None:
        before = self.tier(m)
        self.spend[m] += amount
        if self.tier(m) != before:
            self.tier_changed[m] = at


@dataclass
class Chunk:
    """One chunk's rows by table (schema.table), the SKUs it sold and the analytics sums."""

    rows: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)
    sold: Counter[uuid.UUID] = field(default_factory=Counter)
    writes: Writes = field(default_factory=Writes)
    orders: list[Placed] = field(default_factory=list)  # for the events of recent orders
    copies: int = 1  # the block's chunks: their rows are copied this many times in all

    def add(self, table: str, row: tuple[object, ...]) -> None:
        self.rows.setdefault(table, []).append(row)

    def counted(self, copies: int) -> None:
        """Sums (units sold, analytics' buckets) for the chunk and its copies: the rows are
        copied by SQL, what they add to is added here."""
        self.copies = copies
        for sku in self.sold:
            self.sold[sku] *= copies
        for buckets in (self.writes.minutes, self.writes.seconds):
            for row in buckets.values():
                row[:] = [x * copies for x in row]
        for sale in self.writes.sales.values():
            sale.units *= copies
            sale.gmv *= copies


@dataclass(slots=True)
class Placed:
    """An order as placed, then settled (changed in place as its life goes on)."""

    id: uuid.UUID
    member_id: uuid.UUID
    status: OrderStatus
    lines: tuple[Line, ...]
    subtotal: int
    discount: int
    points: int
    total: int
    refunded: int
    key: str
    token: str
    payment_id: uuid.UUID
    merchant_id: uuid.UUID
    created_at: datetime
    settled_at: datetime
    refunded_at: datetime | None
    earned: int
    earn_balance: int  # the points balance right after the earn entry


class Simulation:
    """The layout's simulated orders, 0 .. block + recent - 1, in time order, a chunk at a
    time (`chunk(first, count)`, a chunk never spanning the block's end)."""

    def __init__(self, plan: Plan, skus: list[Sku], lay: Layout) -> None:
        if not skus:
            raise ValueError("the catalog has no SKUs: seed it first (`marketplace seed`)")
        self.plan, self.skus, self.lay = plan, skus, lay
        self.rng = random.Random(plan.seed)
        self.members = Members(lay.block_members, plan.start, self.rng)
        self.old_span = (lay.old_until - plan.start) / max(lay.block, 1)
        self.recent_span = (plan.until - lay.old_until) / max(lay.recent, 1)
        heavy = lay.block_members > 1 and lay.block >= 2 * HEAVY_MEMBER_ORDERS
        self.heavy_every = lay.block // HEAVY_MEMBER_ORDERS if heavy else 0
        self.copied = False

    def all_members(self) -> Members:
        """Once the block is done: its members with their copies', and the plan's others."""
        if not self.copied:
            self.copied = True
            self.members.copy(self.lay.copies)
            self.members.join(self.plan.members - len(self.members.ids))
        return self.members

    def member_of(self, i: int) -> int:
        """Member 0 places HEAVY_MEMBER_ORDERS of the block's orders and no other."""
        if self.heavy_every and i % self.heavy_every == 0 and i // self.heavy_every < (
                HEAVY_MEMBER_ORDERS):
            return 0
        return self.rng.randrange(1 if self.heavy_every else 0, len(self.members.ids))

    def chunk(self, first: int, count: int) -> Chunk:
        lay, out = self.lay, Chunk()
        if first >= lay.block:
            self.all_members()
        for i in range(first, first + count):
            if i < lay.block:
                at = self.plan.start + self.old_span * (i + self.rng.random())
            else:
                at = lay.old_until + self.recent_span * (i - lay.block + self.rng.random())
            self._order(out, self.member_of(i), at)
        if first < lay.block:
            out.counted(lay.copies)
        return out

    def _lines(self) -> tuple[Line, ...]:
        """One to three SKUs (70/20/10 %), one unit of each mostly (85 %), up to three."""
        rng, skus = self.rng, self.skus
        roll = rng.random()
        n = 1 if roll < 0.7 else 2 if roll < 0.9 else 3
        lines = []
        for s in sorted({skus[rng.randrange(len(skus))] for _ in range(n)}, key=_sku_id):
            roll = rng.random()
            q = 1 if roll < 0.85 else 2 if roll < 0.95 else 3
            lines.append(Line(sku_id=s.id, product_id=s.product_id, merchant_id=s.merchant_id,
                              category=s.category, quantity=q, unit_price=s.price,
                              line_total=q * s.price))
        return tuple(lines)

    def _order(self, out: Chunk, m: int, at: datetime) -> None:
        rng, members = self.rng, self.members
        lines = self._lines()
        tier = members.tier(m)
        subtotal = sum(x.line_total for x in lines)
        discount = discount_for(subtotal, TIER_DISCOUNT_BPS[tier])
        declined = rng.random() < DECLINED
        points = 0
        if not declined and members.balance[m] >= 1_000 and rng.random() < REDEEMING:
            points = min(members.balance[m], max_points_redeemable(subtotal - discount))
        total = subtotal - discount - points
        order_id, settled = new_uuid(rng), at + timedelta(milliseconds=rng.randrange(30, 400))
        p = Placed(
            id=order_id, member_id=members.ids[m], status=OrderStatus.CONFIRMED, lines=lines,
            subtotal=subtotal, discount=discount, points=points, total=total, refunded=0,
            key=str(new_uuid(rng)), token=DECLINE if declined else APPROVE,
            payment_id=new_uuid(rng), merchant_id=lines[0].merchant_id, created_at=at,
            settled_at=settled, refunded_at=None, earned=0, earn_balance=0)
        if declined:
            p.status = OrderStatus.CANCELLED
        else:
            self._confirm(out, m, p, tier)
            self._maybe_refund(out, m, p)
        self._record(out, p, tier)

    def _confirm(self, out: Chunk, m: int, p: Placed, tier: str) -> None:
        members = self.members
        if p.points:
            members.balance[m] -= p.points
            self._points(out, m, -p.points, "redeem", p, p.settled_at)
            out.add("membership.points_reservations",
                    (p.id, p.member_id, p.points, "committed", p.created_at, p.settled_at))
        earned = points_earned(p.total, tier_for_spend(members.spend[m]))
        members.balance[m] += earned
        if earned:
            self._points(out, m, earned, "earn", p, p.settled_at)
        members.add_spend(m, p.total, p.settled_at)
        for line in p.lines:
            out.sold[line.sku_id] += line.quantity
        p.earned, p.earn_balance = earned, members.balance[m]

    def _maybe_refund(self, out: Chunk, m: int, p: Placed) -> None:
        """A full refund (the order REFUNDED) or half of it (still CONFIRMED), when the
        points it earned can still be taken back (they may have been spent since)."""
        roll, members = self.rng.random(), self.members
        if roll >= REFUNDED + PARTLY_REFUNDED:
            return
        amount = p.total if roll < REFUNDED else p.total // 2
        due = points_to_reverse(points_earned=p.earned, total=p.total, refunded=amount)
        if due > members.balance[m] or (amount < p.total and due == 0) or amount == 0:
            return
        at = p.settled_at + timedelta(minutes=self.rng.randrange(5, 600))
        if due:
            members.balance[m] -= due
            self._points(out, m, -due, "reverse", p, at, refunded_total=amount)
        if amount == p.total and p.points:
            members.balance[m] += p.points
            self._points(out, m, p.points, "restore", p, at)
        members.add_spend(m, -amount, at)
        if amount == p.total:  # its stock is back on hand: those units were not sold
            for line in p.lines:
                out.sold[line.sku_id] -= line.quantity
        if amount == p.total:
            p.status = OrderStatus.REFUNDED
        p.refunded, p.refunded_at = amount, at

    def _points(self, out: Chunk, m: int, delta: int, reason: str, p: Placed, at: datetime,
                *, refunded_total: int = 0) -> None:
        out.add("membership.points_ledger", (
            self.members.ids[m], delta, self.members.balance[m], reason, p.id, at,
            refunded_total))

    def _record(self, out: Chunk, p: Placed, tier: str) -> None:
        out.orders.append(p)
        _order_rows(out, p, tier)
        _payment_rows(out, p)
        _analytics(out, p)


def _sku_id(sku: Sku) -> uuid.UUID:
    return sku.id


def _updated_at(p: Placed) -> datetime:
    return p.refunded_at or p.settled_at


def _order_rows(out: Chunk, p: Placed, tier: str) -> None:
    cancel = CancelReason.PAYMENT_DECLINED.value if p.status == OrderStatus.CANCELLED else None
    out.add("orders.orders", (
        p.id, p.member_id, p.status,
        p.subtotal, p.discount, p.points, p.total, CURRENCY, p.token, p.payment_id, cancel,
        p.key, p.created_at + PAYMENT_DEADLINE, p.created_at, False, p.created_at,
        _updated_at(p), p.refunded, tier, TIER_DISCOUNT_BPS[tier]))
    for n, x in enumerate(p.lines, 1):
        out.add("orders.order_lines", (p.id, n, x.sku_id, x.product_id, x.merchant_id,
                                       x.category, x.quantity, x.unit_price, x.line_total))
    if p.status != OrderStatus.CANCELLED:
        out.add("membership.member_orders", (
            p.id, p.member_id, p.total, p.refunded, tier, p.earned, p.settled_at, p.refunded_at))


def payment_status(p: Placed) -> PaymentStatus:
    if p.status == OrderStatus.CANCELLED:
        return PaymentStatus.FAILED
    if p.refunded == p.total and p.refunded:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED if p.refunded else PaymentStatus.CAPTURED


def request_hash(p: Placed) -> str:
    """The fingerprint payments keeps of the sale orders asked for (clients._sale)."""
    return AuthorizePayment(
        key=f"auth:{p.id}", order_id=p.id, member_id=p.member_id, merchant_id=p.merchant_id,
        amount=p.total, currency=CURRENCY, token=p.token, capture_key=f"capture:{p.id}",
    ).fingerprint()


def _payment_rows(out: Chunk, p: Placed) -> None:
    status = payment_status(p)
    failed = status == PaymentStatus.FAILED
    captured = 0 if failed else p.total
    commission = ledger.commission_on(captured, COMMISSION_BPS)
    out.add("payments.payments", (
        p.payment_id, p.id, p.member_id, p.merchant_id, status.value, CURRENCY, p.total,
        captured, p.refunded, 0 if failed else commission,
        "card_declined" if failed else None,
        None if failed else processor._reference("auth", f"authorize:{p.id}"),
        request_hash(p), p.settled_at, _updated_at(p)))
    if failed:
        return
    postings = [(ledger.authorize(p.total), p.settled_at), (ledger.capture(
        authorized=p.total, captured=captured, commission=commission,
        merchant_id=p.merchant_id), p.settled_at)]
    if p.refunded and p.refunded_at is not None:
        postings.append((ledger.refund(
            captured=captured, commission=commission, refunded_before=0, amount=p.refunded,
            merchant_id=p.merchant_id), p.refunded_at))
        out.add("payments.refunds", (uuid.uuid5(p.payment_id, REFUND_REASON), p.payment_id,
                                     p.refunded, REFUND_REASON, p.refunded_at))
    for posting, at in postings:
        # Entries are numbered within the chunk; the loader adds the sequence's base.
        entry = len(out.rows.get("payments.journal_entries", ()))
        out.add("payments.journal_entries", (entry, p.payment_id, posting.kind, CURRENCY, at))
        for account, amount in posting.lines:
            out.add("payments.journal_lines", (entry, account, amount))


def _analytics(out: Chunk, p: Placed) -> None:
    """What analytics' handlers made of the order's and payment's events (domain/orders)."""
    fact, _ = facts.placed(facts.OrderFact(), total=p.total)
    if p.status == OrderStatus.CANCELLED:
        fact, _ = facts.cancelled(fact)
    else:
        fact, contributions = facts.confirmed(fact, total=p.total, at=p.settled_at)
        out.writes.contribute(contributions, p.settled_at)
        out.writes.sell(p.id, p.member_id, p.settled_at, [
            LineSale(x.sku_id, x.product_id, x.merchant_id, x.category, x.quantity, x.line_total)
            for x in p.lines])
        if p.refunded and p.refunded_at is not None:
            fact, contributions = facts.refunded(fact, amount=p.refunded, at=p.refunded_at)
            out.writes.contribute(contributions, p.refunded_at)
    out.add("analytics.orders_fact", (
        p.id, p.member_id, fact.status, fact.total, fact.confirmed_at, fact.refunded,
        fact.refunded_at, _updated_at(p)))
    status = payment_status(p)
    captured = 0 if status == PaymentStatus.FAILED else p.total
    out.add("analytics.payments_fact", (
        p.payment_id, p.id, p.member_id, status.value, status_rank(status.value), p.total,
        captured, p.refunded, "card_declined" if captured == 0 else "", p.settled_at,
        _updated_at(p)))
