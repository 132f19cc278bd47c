"""Checkout's read and three writes, batched across the checkouts in flight: look up,
place, pay, settle.

The saga and the recovery loop submit one order at a time; each step gathers what is
submitted together (`batcher.Batcher`) into one look-up (SKUs and tiers), one placing
statement, one AuthorizeBatch call and one settling statement. The steps reach Postgres
and payments through the ports below, which the composition root fills in (tests/unit
passes fakes).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

import asyncpg

from services.common import ratelimit
from services.orders.admission import Admission
from services.orders.batcher import Batcher
from services.orders.clients import Payment
from services.orders.domain.order import Order
from services.orders.settings import OrdersSettings
from services.orders.store import catalog, idempotency, members, placing, settling, stock
from services.orders.store.placing import Outcome, Placed, Placing
from services.orders.store.settling import Settled, Settling

log = logging.getLogger(__name__)
T = TypeVar("T")

# Lost a lock race Postgres had to break (a cycle across replicas or with a statement
# outside the lock order, or a serialization failure): run it again, a few times.
_CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
CONFLICT_ATTEMPTS = 3


async def retried(attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
    """`attempt()`, run again (up to CONFLICT_ATTEMPTS in all) when it loses a lock race;
    each run is its own statement or transaction, rolled back in full when it lost."""
    for n in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return await attempt()
        except _CONFLICTS as exc:
            if n == CONFLICT_ATTEMPTS:
                raise
            log.warning("lock conflict; retrying", extra={"step": what, "error": str(exc)})
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Lookup:
    """What a checkout reads before it is priced: its SKUs, and its member's tier."""

    sku_ids: tuple[uuid.UUID, ...]
    member_id: uuid.UUID


@dataclass(frozen=True)
class Known:
    skus: dict[uuid.UUID, asyncpg.Record]  # price, owner, bucketing; unknown ids missing
    tier: str | None  # as orders' projection knows it; None before registration arrives


class LookupStore(Protocol):
    async def look_up(self, batch: Sequence[Lookup]) -> Sequence[Known]: ...


class PlaceStore(Protocol):
    async def place(self, batch: Sequence[Placing]) -> Sequence[Placed]: ...

    async def place_reserved(self, item: Placing, *, hot: Set[uuid.UUID] | None
                             ) -> Placed: ...


class SettleStore(Protocol):
    async def settle(self, batch: Sequence[Settling]) -> Sequence[Settled]: ...

    async def settle_refilled(self, item: Settling) -> Settled: ...


class BatchPayments(Protocol):
    async def authorize_batch(self, orders: Sequence[Order]
                              ) -> Sequence[Payment | Exception]: ...


@dataclass(frozen=True)
class BatchSettings:
    max_size: int = 32
    window_s: float = 0.0
    parallel: int = 2


class Pipeline:
    """The checkout's batched steps in this process."""

    def __init__(self, *, lookups: LookupStore, places: PlaceStore, payments: BatchPayments,
                 settles: SettleStore, batches: BatchSettings,
                 company: Callable[[], int] = lambda: 0) -> None:
        self.places, self.settles = places, settles
        shape = {"max_size": batches.max_size, "window_s": batches.window_s,
                 "parallel": batches.parallel, "company": company}
        self._look_up: Batcher[Lookup, Known] = Batcher(
            "look_up", lookups.look_up, **shape)  # type: ignore[arg-type]
        # Two orders of one member never share a placing batch (their rate row, their cart).
        self._place: Batcher[Placing, Placed] = Batcher(
            "place", places.place, key=lambda p: p.order.member_id, **shape)  # type: ignore[arg-type]
        # One order never appears twice in a payment or settling batch: the checkout and
        # recovery (once its grace has passed on a slow machine) can submit the same order
        # at the same moment, and one settling statement would then move its lines twice.
        # The later waits for the next batch, which finds the order already settled.
        self._pay: Batcher[Order, Payment] = Batcher(
            "pay", payments.authorize_batch, key=_order_id, **shape)  # type: ignore[arg-type]
        # Recovery's retries pay in batches of their own: a retry is most likely a card that
        # did not answer in time before, and a batch is answered when its slowest card is,
        # so sharing one would make fresh checkouts wait on known-slow cards.
        self._pay_retries: Batcher[Order, Payment] = Batcher(
            "pay", payments.authorize_batch, key=_order_id, **shape)  # type: ignore[arg-type]
        self._settle: Batcher[Settling, Settled] = Batcher(
            "settle", settles.settle, key=lambda x: x.order.id, **shape)  # type: ignore[arg-type]

    async def look_up(self, item: Lookup) -> Known:
        return await self._look_up.submit(item)

    async def place(self, item: Placing) -> Placed:
        return await self._place.submit(item)

    async def pay(self, order: Order, *, retry: bool = False) -> Payment:
        """The payment (a sale) for the order; raises the client's Rejected/Unavailable.
        `retry`: recovery asking again, batched apart from fresh checkouts."""
        return await (self._pay_retries if retry else self._pay).submit(order)

    async def settle(self, item: Settling) -> Settled:
        return await self._settle.submit(item)


def _order_id(order: Order) -> uuid.UUID:
    return order.id


class _Undo(Exception):
    """Roll the transaction back: the order was not placed (or settled) after all."""

    def __init__(self, outcome: Placed | Settled) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


@dataclass(frozen=True)
class PgLookups:
    pool: asyncpg.Pool

    async def look_up(self, batch: Sequence[Lookup]) -> Sequence[Known]:
        sku_ids = list(dict.fromkeys(s for item in batch for s in item.sku_ids))
        member_ids = list(dict.fromkeys(item.member_id for item in batch))
        async with self.pool.acquire() as conn:
            skus = await catalog.skus_for_checkout(conn, sku_ids)
            tiers = await members.tiers_of(conn, member_ids)
        return [Known({s: skus[s] for s in item.sku_ids if s in skus}, tiers.get(item.member_id))
                for item in batch]


@dataclass(frozen=True)
class PgPlaces:
    pool: asyncpg.Pool
    claim_timeout_s: float
    rate: Callable[[], tuple[str, timedelta, timedelta]]

    async def place(self, batch: Sequence[Placing]) -> Sequence[Placed]:
        try:
            return await self._place(batch)
        except (asyncpg.CheckViolationError, *_CONFLICTS) as exc:
            # A member's first hit raced in from another statement, or a lost lock race:
            # decide each order on its own.
            if len(batch) > 1:
                return [(await self.place([p]))[0] for p in batch]
            if ratelimit.is_refusal(exc):
                return [Placed(Outcome.RATE)]
            if isinstance(exc, _CONFLICTS):
                return await retried(lambda: self._place(batch), what="place")
            raise

    async def _place(self, batch: Sequence[Placing]) -> Sequence[Placed]:
        async with self.pool.acquire() as conn:
            return await placing.place(conn, batch, claim_timeout_s=self.claim_timeout_s,
                                       rate=self.rate())

    async def place_reserved(self, item: Placing, *, hot: Set[uuid.UUID] | None) -> Placed:
        """A bucketed SKU's order: its units taken (from the buckets) in a transaction,
        then the placing statement in it; all undone unless the order is placed."""
        return await retried(lambda: self._place_reserved(item, hot=hot), what="place")

    async def _place_reserved(self, item: Placing, *, hot: Set[uuid.UUID] | None) -> Placed:
        order = item.order
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await placing.lock_cart(conn, order)  # first: the lock order's cart lines
                if await idempotency.lookup(conn, member_id=order.member_id,
                                            key=order.idempotency_key) is not None:
                    return Placed(Outcome.HELD)  # a retry: no bucket touched
                try:
                    await stock.reserve(conn, order.lines, hot=hot)
                except stock.OutOfStock as exc:
                    return Placed(Outcome.SHORT, exc.sku_id, exc.available)
                [placed] = await placing.place(
                    conn, [item], claim_timeout_s=self.claim_timeout_s, rate=self.rate(),
                    reserved=[x.sku_id for x in order.lines])
                if placed.outcome != Outcome.PLACED:
                    raise _Undo(placed)
                return placed
        except _Undo as undone:
            assert isinstance(undone.outcome, Placed)
            return undone.outcome


@dataclass(frozen=True)
class PgSettles:
    pool: asyncpg.Pool

    async def settle(self, batch: Sequence[Settling]) -> Sequence[Settled]:
        try:
            return await self._settle(batch)
        except _CONFLICTS:
            if len(batch) > 1:  # lost a lock race: settle each order on its own
                return [(await self.settle([x]))[0] for x in batch]
            return await retried(lambda: self._settle(batch), what="settle")

    async def _settle(self, batch: Sequence[Settling]) -> Sequence[Settled]:
        async with self.pool.acquire() as conn:
            return await settling.settle(conn, batch)

    async def settle_refilled(self, item: Settling) -> Settled:
        """A cancelled order of a bucketed SKU: its units back into the buckets, then the
        settling statement, in one transaction (undone unless the order is settled)."""
        return await retried(lambda: self._settle_refilled(item), what="settle")

    async def _settle_refilled(self, item: Settling) -> Settled:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await settling.lock_order(conn, item.order)  # first: order, cart lines
                refilled = await stock.refill(conn, item.order.lines)
                [settled] = await settling.settle(conn, [item], refilled=refilled)
                if settled != Settled.DONE:
                    raise _Undo(settled)
                return settled
        except _Undo as undone:
            assert isinstance(undone.outcome, Settled)
            return undone.outcome


def build(settings: OrdersSettings, pool: asyncpg.Pool, payments: BatchPayments,
          admission: Admission) -> Pipeline:
    """The pipeline over Postgres and payments, shaped by the settings."""
    checkouts = admission.checkouts
    return Pipeline(
        lookups=PgLookups(pool),
        places=PgPlaces(pool, settings.idempotency_claim_timeout_s, admission.members.params),
        payments=payments, settles=PgSettles(pool),
        batches=BatchSettings(max_size=settings.checkout_batch_max,
                              window_s=settings.checkout_batch_window_ms / 1000,
                              parallel=settings.checkout_batches_in_flight),
        company=lambda: checkouts.in_flight)
