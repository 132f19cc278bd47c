"""Protection of checkout: the per-member rate (counted for the cluster), and in this
process per-hot-SKU admission, checkout slots and the sold-out memory.

What is per process answers before the database is touched, so a midnight crowd on one
SKU costs Postgres nothing. The member rate is spent by the statement that places the
order; a member refused lately is refused again from memory until their wait is over.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from services.common.errors import Problem
from services.common.ratelimit import Db, Rate, SharedLimit
from services.common.ratelimit import too_many as rate_limited

Clock = Callable[[], float]
_MAX_KEYS = 100_000
SHED_DETAIL = "too many checkouts in progress; retry in a moment"
MEMBER_DETAIL = "too many checkouts from this member; slow down"


def hot_sku_detail(sku: uuid.UUID) -> str:
    return f"too many buyers of SKU {sku} at once; retry in a moment"


@dataclass
class SkuGate:
    """At most `limit` checkouts of one hot SKU in progress at once."""

    limit: int
    _in_flight: dict[uuid.UUID, int] = field(default_factory=dict)

    @property
    def any_full(self) -> bool:
        """Some SKU has `limit` checkouts in progress (few SKUs are ever in flight)."""
        return any(n >= self.limit for n in self._in_flight.values())

    def full_among(self, sku_ids: Iterable[uuid.UUID]) -> uuid.UUID | None:
        """The first of `sku_ids` whose checkouts in progress are at the limit, if any."""
        return next((s for s in sku_ids if self._in_flight.get(s, 0) >= self.limit), None)

    @contextlib.contextmanager
    def admit(self, sku_ids: Iterable[uuid.UUID]) -> Iterator[None]:
        """Enter for every SKU or for none; 429 when one of them is full."""
        ids = sorted(set(sku_ids))
        if (full := self.full_among(ids)) is not None:
            raise rate_limited(1, hot_sku_detail(full))
        for sku in ids:
            self._in_flight[sku] = self._in_flight.get(sku, 0) + 1
        try:
            yield
        finally:
            for sku in ids:
                left = self._in_flight[sku] - 1
                if left:
                    self._in_flight[sku] = left
                else:
                    del self._in_flight[sku]


@dataclass
class Recent:
    """Facts about SKUs remembered for `ttl_s`: which are hot, how few units are left."""

    ttl_s: float
    clock: Clock = time.monotonic
    _values: dict[uuid.UUID, tuple[int, float]] = field(default_factory=dict)

    def get(self, sku: uuid.UUID) -> int | None:
        hit = self._values.get(sku)
        if hit is None:
            return None
        if hit[1] <= self.clock():
            del self._values[sku]
            return None
        return hit[0]

    def forget(self, skus: Iterable[uuid.UUID]) -> None:
        for sku in skus:
            self._values.pop(sku, None)

    def put(self, sku: uuid.UUID, value: int) -> None:
        if len(self._values) >= _MAX_KEYS:
            self._values.clear()
        self._values[sku] = (value, self.clock() + self.ttl_s)


@dataclass
class Slots:
    """At most `limit` checkouts in progress in this process; beyond: 503 at once.

    Checkout capacity is small next to a midnight crowd: queueing the excess only makes
    every answer late (Little's law), so it is shed while the admitted stay fast.
    """

    limit: int
    in_flight: int = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    def refuse_if_full(self) -> None:
        """503 now if `enter` would refuse: nothing else is spent on such a request."""
        if self.full:
            raise Problem(503, "overloaded", "Service overloaded", SHED_DETAIL,
                          headers={"Retry-After": "1"})

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        self.refuse_if_full()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


@dataclass
class Admission:
    members: SharedLimit  # keyed by the member id's text
    hot_gate: SkuGate
    checkouts: Slots
    hot: Recent  # sku -> 1 (bucketed) / 0
    left: Recent  # sku -> units on hand seen by the last out-of-stock answer

    @classmethod
    def build(cls, *, burst: int, per_s: float, hot_limit: int, sold_out_s: float,
              max_checkouts: int = 16, clock: Clock = time.monotonic) -> Admission:
        members = SharedLimit("checkout-member", Rate.per_second(burst, per_s), clock=clock)
        return cls(members=members, hot_gate=SkuGate(hot_limit),
                   checkouts=Slots(max_checkouts),
                   hot=Recent(5.0, clock), left=Recent(sold_out_s, clock))

    def check_member(self, member_id: uuid.UUID) -> None:
        """429 at once for a member the cluster refused lately (the decision is the placing
        statement's: see `member_refused`)."""
        if wait := self.members.known_wait(str(member_id)):
            raise rate_limited(wait, MEMBER_DETAIL)

    async def member_refused(self, db: Db, member_id: uuid.UUID) -> Problem:
        """The 429 for a member whose placing the rate refused (remembered from now on)."""
        return rate_limited(await self.members.refused(db, str(member_id)), MEMBER_DETAIL)

    def known_short(self, items: Iterable[tuple[uuid.UUID, int]]) -> uuid.UUID | None:
        """A SKU recently seen with fewer units than asked for, if any."""
        for sku, quantity in items:
            left = self.left.get(sku)
            if left is not None and left < quantity:
                return sku
        return None

    def sold_out(self, sku: uuid.UUID, available: int | None) -> None:
        self.left.put(sku, available or 0)
