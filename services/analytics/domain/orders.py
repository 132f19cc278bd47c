"""Per-order state and what each order event adds to the minute buckets.

The projection must reach the same numbers whatever order events arrive in (a refund
can overtake its confirmation on another stream partition or after a redelivery). So
every event merges into the order's state, and a bucket only gets what a *transition*
of that state adds: GMV when the order first becomes confirmed, a refund per refund
event (the inbox makes each event apply once). A partial refund is money only: the order
stays CONFIRMED until its refunds add up to its confirmed total.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.analytics.domain.window import minute_of

# Later in an order's life wins, whatever order the events come in.
STATUS_RANK = {"PENDING": 0, "CANCELLED": 1, "CONFIRMED": 2, "REFUNDED": 3}


@dataclass(frozen=True, slots=True)
class OrderFact:
    """What analytics knows about one order; amounts in fen."""

    status: str = "PENDING"
    total: int = 0
    confirmed_at: datetime | None = None
    refunded: int = 0
    refunded_at: datetime | None = None

    @property
    def is_confirmed(self) -> bool:
        return self.confirmed_at is not None


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one transition adds to a minute bucket."""

    minute: datetime
    gmv: int = 0
    orders: int = 0
    refunds: int = 0


Outcome = tuple[OrderFact, list[Contribution]]


def merge_status(current: str, incoming: str) -> str:
    """The status that is further along in an order's life."""
    return max(current, incoming, key=lambda s: STATUS_RANK.get(s, -1))


def placed(fact: OrderFact, *, total: int) -> Outcome:
    """A placed order adds nothing until it is confirmed."""
    keep_total = fact.total if fact.is_confirmed else total
    return replace(fact, status=merge_status(fact.status, "PENDING"), total=keep_total), []


def cancelled(fact: OrderFact) -> Outcome:
    return replace(fact, status=merge_status(fact.status, "CANCELLED")), []


def confirmed(fact: OrderFact, *, total: int, at: datetime) -> Outcome:
    """GMV and one order in the confirmation's minute, the first time only."""
    status = merge_status(fact.status, "CONFIRMED")
    if fact.is_confirmed:
        return replace(fact, status=status), []
    new = replace(fact, status=status, total=total, confirmed_at=at)
    return _settled(new), [Contribution(minute_of(at), gmv=total, orders=1)]


def refunded(fact: OrderFact, *, amount: int, at: datetime, in_full: bool = False) -> Outcome:
    """`amount` (this refund, not a running total) in the refund's minute.

    The order becomes REFUNDED once its refunds add up to its confirmed total, whichever
    event arrives last. `in_full` says this refund is known to end the order: events from
    before partial refunds carried no running total and were only ever full refunds.
    """
    if amount < 0:
        raise ValueError(f"a refund cannot be negative, got {amount}")
    latest = at if fact.refunded_at is None else max(fact.refunded_at, at)
    # A refund means the order was confirmed, even if that event has not arrived yet.
    new = replace(
        fact,
        status=merge_status(fact.status, "REFUNDED" if in_full else "CONFIRMED"),
        refunded=fact.refunded + amount,
        refunded_at=latest,
    )
    return _settled(new), [Contribution(minute_of(at), refunds=amount)] if amount else []


def _settled(fact: OrderFact) -> OrderFact:
    """REFUNDED once a confirmed order's refunds reach its total."""
    if fact.is_confirmed and fact.refunded > 0 and fact.refunded >= fact.total:
        return replace(fact, status=merge_status(fact.status, "REFUNDED"))
    return fact
