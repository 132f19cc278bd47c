"""The projection writes a batch of events adds up, flushed as multi-row upserts.

Bucket tables (GMV per minute and second, product sales, order lines) only ever grow by
sums, so a batch folds its events' contributions in memory and writes each bucket once.
Keys are written in sorted order so that two replicas never lock rows in opposite orders.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from services.analytics import metrics, store
from services.analytics.domain.orders import Contribution, OrderFact
from services.analytics.domain.window import minute_of


def second_of(moment: datetime) -> datetime:
    """The UTC second bucket `moment` falls in."""
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class LineSale:
    sku_id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID | None
    category: str
    units: int
    gmv: int


@dataclass(slots=True)
class _Sold:
    """Running sums of one bucket of sales: a SKU in a minute, or a line of an order."""

    product_id: uuid.UUID
    merchant_id: uuid.UUID | None
    category: str
    member_id: uuid.UUID | None = None
    at: datetime | None = None
    units: int = 0
    gmv: int = 0


@dataclass
class Writes:
    """Everything one batch (or one event, in the per-event fallback) writes to buckets."""

    minutes: dict[datetime, list[int]] = field(default_factory=dict)  # [gmv, refunds, orders]
    seconds: dict[datetime, list[int]] = field(default_factory=dict)
    sales: dict[tuple[datetime, uuid.UUID], _Sold] = field(default_factory=dict)
    lines: dict[tuple[uuid.UUID, uuid.UUID], _Sold] = field(default_factory=dict)
    # Merges whose SQL is commutative but not additive: pipelined one row at a time.
    merges: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    confirmed_at: list[datetime] = field(default_factory=list)  # ce-time, for the lag metric
    # Orders' state, locked for the batch; the changed ones are written back at the flush.
    facts: dict[uuid.UUID, OrderFact] = field(default_factory=dict)
    changed: dict[uuid.UUID, tuple[uuid.UUID | None, OrderFact]] = field(default_factory=dict)

    async def lock_orders(self, conn: asyncpg.Connection, order_ids: list[uuid.UUID]) -> None:
        """Lock and read, in one go, the orders the batch is about to change."""
        missing = [i for i in order_ids if i not in self.facts]
        if missing:
            self.facts.update(await store.lock_orders(conn, missing))

    async def order(self, conn: asyncpg.Connection, order_id: uuid.UUID) -> OrderFact:
        await self.lock_orders(conn, [order_id])
        return self.facts[order_id]

    def keep_order(self, order_id: uuid.UUID, member_id: uuid.UUID | None,
                   fact: OrderFact) -> None:
        self.facts[order_id] = fact
        known = self.changed.get(order_id)
        self.changed[order_id] = (known[0] if known and known[0] else member_id, fact)

    def contribute(self, contributions: list[Contribution], at: datetime) -> None:
        for c in contributions:
            for buckets, key in ((self.minutes, c.minute), (self.seconds, second_of(at))):
                row = buckets.setdefault(key, [0, 0, 0])
                row[0] += c.gmv
                row[1] += c.refunds
                row[2] += c.orders

    def sell(
        self, order_id: uuid.UUID, member_id: uuid.UUID | None, at: datetime,
        lines: list[LineSale],
    ) -> None:
        """A confirmed order's lines: product sales per minute and the buyer's order lines."""
        for ln in lines:
            sale = self.sales.setdefault(
                (minute_of(at), ln.sku_id), _Sold(ln.product_id, ln.merchant_id, ln.category)
            )
            line = self.lines.setdefault(
                (order_id, ln.sku_id),
                _Sold(ln.product_id, ln.merchant_id, ln.category, member_id=member_id, at=at),
            )
            for sold in (sale, line):
                sold.units += ln.units
                sold.gmv += ln.gmv

    def merge(self, sql: str, *args: object) -> None:
        self.merges.append((sql, args))

    async def flush(self, conn: asyncpg.Connection) -> None:
        await store.save_orders(conn, self.changed)
        await _add_buckets(conn, "gmv_minute", "minute", self.minutes)
        await _add_buckets(conn, "gmv_second", "second", self.seconds)
        await _add_sales(conn, self.sales)
        await _add_lines(conn, self.lines)
        for sql, args in self.merges:
            await conn.execute(sql, *args)

    def observe_latency(self, now: datetime) -> None:
        for at in self.confirmed_at:
            metrics.CONFIRMATION_TO_GMV.observe(max((now - at).total_seconds(), 0.0))


async def _add_buckets(
    conn: asyncpg.Connection, table: str, column: str, buckets: dict[datetime, list[int]]
) -> None:
    if not buckets:
        return
    keys = sorted(buckets)
    await conn.execute(
        f"INSERT INTO {table} ({column}, gmv, refunds, orders) "
        "SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::int[]) "
        f"ON CONFLICT ({column}) DO UPDATE SET gmv = {table}.gmv + EXCLUDED.gmv, "
        f"refunds = {table}.refunds + EXCLUDED.refunds, orders = {table}.orders + EXCLUDED.orders",
        keys, *([buckets[k][i] for k in keys] for i in range(3)),
    )


async def _add_sales(
    conn: asyncpg.Connection, sales: dict[tuple[datetime, uuid.UUID], _Sold]
) -> None:
    if not sales:
        return
    keys = sorted(sales)
    rows = [sales[k] for k in keys]
    await conn.execute(
        "INSERT INTO product_sales (minute, sku_id, product_id, merchant_id, category, units, gmv) "
        "SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], "
        "$6::bigint[], $7::bigint[]) ON CONFLICT (minute, sku_id) DO UPDATE SET "
        "units = product_sales.units + EXCLUDED.units, gmv = product_sales.gmv + EXCLUDED.gmv",
        [k[0] for k in keys], [k[1] for k in keys], [r.product_id for r in rows],
        [r.merchant_id for r in rows], [r.category for r in rows], [r.units for r in rows],
        [r.gmv for r in rows],
    )


async def _add_lines(
    conn: asyncpg.Connection, lines: dict[tuple[uuid.UUID, uuid.UUID], _Sold]
) -> None:
    if not lines:
        return
    keys = sorted(lines)
    rows = [lines[k] for k in keys]
    await conn.execute(
        "INSERT INTO order_lines (order_id, sku_id, product_id, merchant_id, member_id, category, "
        "units, gmv, confirmed_at) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], "
        "$4::uuid[], $5::uuid[], $6::text[], $7::bigint[], $8::bigint[], $9::timestamptz[]) "
        "ON CONFLICT (order_id, sku_id) DO UPDATE SET units = order_lines.units + EXCLUDED.units, "
        "gmv = order_lines.gmv + EXCLUDED.gmv",
        [k[0] for k in keys], [k[1] for k in keys], [r.product_id for r in rows],
        [r.merchant_id for r in rows], [r.member_id for r in rows], [r.category for r in rows],
        [r.units for r in rows], [r.gmv for r in rows], [r.at for r in rows],
    )
