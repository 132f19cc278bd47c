"""`marketplace history`: fill a stack with a realistic, consistent past.

Orders with their lines, payments with their journal entries, points ledger entries, the
analytics projection, and, for the recent past only, published outbox rows, inbox rows and
stored answers within their retention; `marketplace audit` over it is clean. An operator
tool like dbsetup: it writes every service's schema directly, as the admin login, into a
migrated stack that is stopped or idle, with COPY, a chunk per transaction. Deterministic:
the same --seed and --until give the same rows (a second run needs another seed).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg

from seeds.seed import Progress
from services.analytics.settings import AnalyticsSettings
from services.cli import history_clone, history_members
from services.cli.history_events import RETAINED, Cutoffs, add_recent, recent_from
from services.cli.history_model import Chunk, Layout, Plan, Simulation, Sku, layout
from services.common.settings import ServiceSettings
from services.payments.settings import PaymentsSettings

DEFAULT_SEED = 20151111
CHUNK = 20_000
BLOCK = 50_000  # at most this many orders simulated for the past older than retention
COPIES_PER_TRANSACTION = 4
COPY_CONNECTIONS = 2  # the block's copies are written on this many connections at once
# What the loader's connections skip: the per-row triggers (foreign keys, the journal's balance
# check, the outbox's NOTIFY), as pg_restore does, and the wait for each commit's flush.
LOADER_SETTINGS = {"session_replication_role": "replica", "synchronous_commit": "off",
                   "application_name": "marketplace-history"}
# The columns each generated row fills, in its order (history_model, history_events).
COLUMNS: dict[str, tuple[str, ...]] = {
    "orders.orders": (
        "id", "member_id", "status", "subtotal", "discount", "points_redeemed", "total",
        "currency", "payment_token", "payment_id", "cancel_reason", "idempotency_key",
        "payment_deadline", "retry_at", "points_pending", "created_at", "updated_at",
        "refunded", "tier", "discount_bps"),
    "orders.order_lines": ("order_id", "line_no", "sku_id", "product_id", "merchant_id",
                           "category", "quantity", "unit_price", "line_total"),
    "orders.idempotency_keys": ("member_id", "key", "request_hash", "status", "order_id",
                                "response_status", "response_body", "created_at",
                                "expires_at"),
    "payments.payments": ("id", "order_id", "member_id", "merchant_id", "status", "currency",
                          "amount", "captured", "refunded", "commission", "decline_code",
                          "processor_ref", "request_hash", "created_at", "updated_at"),
    "payments.refunds": ("id", "payment_id", "amount", "reason", "created_at"),
    "payments.journal_entries": ("id", "payment_id", "kind", "currency", "created_at"),
    "payments.journal_lines": ("entry_id", "account", "amount"),
    "payments.idempotency_keys": ("method", "key", "request_hash", "payment_id", "response",
                                  "created_at"),
    "membership.points_ledger": ("member_id", "delta", "balance_after", "reason", "order_id",
                                 "created_at", "refunded_total"),
    "membership.member_orders": ("order_id", "member_id", "total", "refunded", "tier_at_order",
                                 "points_earned", "confirmed_at", "refunded_at"),
    "membership.points_reservations": ("order_id", "member_id", "points", "status",
                                       "created_at", "updated_at"),
    "analytics.orders_fact": ("order_id", "member_id", "status", "total", "confirmed_at",
                              "refunded", "refunded_at", "updated_at"),
    "analytics.payments_fact": ("payment_id", "order_id", "member_id", "status", "status_rank",
                                "amount", "captured", "refunded", "decline_code",
                                "first_seen_at", "updated_at"),
    "analytics.order_lines": ("order_id", "sku_id", "product_id", "merchant_id", "member_id",
                              "category", "units", "gmv", "confirmed_at"),
    **{f"{schema}.outbox": ("event_id", "subject", "aggregate_id", "payload", "headers",
                            "created_at", "published_at")
       for schema in ("orders", "payments", "membership")},
    **{f"{schema}.inbox": ("consumer", "event_id", "subject", "processed_at")
       for schema in ("analytics", "membership")},
    **history_members.COLUMNS,
}


def _default(model: type[ServiceSettings], name: str) -> float:
    return float(model.model_fields[name].default)


def cutoffs(now: datetime) -> Cutoffs:
    """What each retention (the services' settings, at their defaults) keeps, from `now`."""
    return Cutoffs(
        outbox=now - timedelta(hours=_default(ServiceSettings, "outbox_retention_h")),
        inbox=now - timedelta(days=_default(ServiceSettings, "inbox_retention_days")),
        order_keys=now,  # expires_at < now: the purge takes it
        payment_keys=now - timedelta(
            days=_default(PaymentsSettings, "idempotency_retention_days")),
        gmv_seconds=now - timedelta(
            days=_default(AnalyticsSettings, "second_retention_days")),
    )


@dataclass(frozen=True)
class Loaded:
    orders: int
    members: int
    rows: int
    seconds: float
    copies: int = 1  # the block and its copies (history_clone)


async def _catalog(conn: asyncpg.Connection) -> list[Sku]:
    rows = await conn.fetch(
        "SELECT s.id, s.product_id, p.merchant_id, p.category, s.price "
        "FROM orders.skus s JOIN orders.products p ON p.id = s.product_id ORDER BY s.id")
    return [Sku(*r) for r in rows]


async def _copy(conn: asyncpg.Connection, table: str, rows: list[tuple[object, ...]]) -> None:
    schema, name = table.split(".")
    await conn.copy_records_to_table(name, records=rows, columns=COLUMNS[table],
                                     schema_name=schema)


async def _journal_ids(conn: asyncpg.Connection, out: Chunk) -> None:
    """Entries are numbered from 0 within the chunk: take that many ids from the sequence
    and renumber them."""
    entries = out.rows.get("payments.journal_entries", [])
    if not entries:
        return
    base = await history_clone.entry_numbers(conn, len(entries))
    out.rows["payments.journal_entries"] = [(base + cast(int, e), *rest) for e, *rest in entries]
    out.rows["payments.journal_lines"] = [(base + cast(int, e), account, amount)
                                          for e, account, amount
                                          in out.rows["payments.journal_lines"]]


async def _write_chunk(conn: asyncpg.Connection, out: Chunk) -> int:
    """One chunk in one transaction: its rows, the analytics buckets it adds to, the SKUs'
    sold units (restocked by as many: history changes no SKU's stock on hand)."""
    writes = out.writes
    out.rows["analytics.order_lines"] = [
        (o, s, x.product_id, x.merchant_id, x.member_id, x.category, x.units, x.gmv, x.at)
        for (o, s), x in writes.lines.items()]
    writes.lines = {}
    if out.copies > 1 and (writes.seconds or any(t.endswith(RETAINED) for t in out.rows)):
        raise RuntimeError("the block to copy holds retained rows, whose bodies carry ids")
    async with conn.transaction():
        if out.copies > 1:
            await history_clone.add(conn, [row[0] for row in out.rows["orders.orders"]])
        await _journal_ids(conn, out)
        for table, rows in out.rows.items():
            await _copy(conn, table, rows)
        await conn.execute("SET LOCAL search_path = analytics")
        await writes.flush(conn)  # per-minute and per-second GMV, product sales: added to
        skus = sorted(out.sold)
        await conn.execute(
            "UPDATE orders.skus s SET sold = s.sold + x.n, restocked = s.restocked + x.n "
            "FROM unnest($1::uuid[], $2::bigint[]) AS x(id, n) WHERE s.id = x.id",
            skus, [out.sold[s] for s in skus])
    return sum(len(rows) for rows in out.rows.values())


# The simulation lives in a process of its own (one worker, so its state carries from
# chunk to chunk): it makes the next chunks while this process and Postgres write one.
_simulation: Simulation | None = None
_cut: Cutoffs | None = None


def _start(plan: Plan, skus: list[Sku], cut: Cutoffs, lay: Layout) -> None:
    global _simulation, _cut
    _simulation, _cut = Simulation(plan, skus, lay), cut


def _generate(first: int, count: int) -> Chunk:
    assert _simulation is not None and _cut is not None
    out = _simulation.chunk(first, count)
    add_recent(out, _cut)
    out.orders = []  # used up: not sent back
    return out


def _member_rows(password_hash: str, seed: int,
                 now: datetime) -> dict[str, list[tuple[object, ...]]]:
    assert _simulation is not None
    return history_members.rows(_simulation.all_members(), password_hash=password_hash, seed=seed,
                                now=now)


def _chunks(lay: Layout, chunk: int) -> list[tuple[int, int]]:
    """(first, count) of each chunk: the block's, then the recent orders' (none spans both)."""
    return [(first, min(chunk, end - first)) for begin, end in (
        (0, lay.block), (lay.block, lay.simulated)) for first in range(begin, end, chunk)]


async def load(admin_dsn: str, plan: Plan, *, chunk: int = CHUNK, block: int = BLOCK,
               progress: bool = True, now: datetime | None = None, ahead: int = 2,
               copies_per_transaction: int = COPIES_PER_TRANSACTION) -> Loaded:
    """Generate and write `plan`'s history; returns what it wrote. The past older than
    retention is simulated as a block of at most `block` orders, then copied."""
    started = time.perf_counter()
    # The rows are consistent by construction (the audit checks it), so the per-row triggers
    # are not run for them (LOADER_SETTINGS).
    conn = await asyncpg.connect(admin_dsn, server_settings=LOADER_SETTINGS)
    scratch = False
    loop = asyncio.get_running_loop()
    cut = cutoffs(now or datetime.now(UTC))
    lay = layout(plan, recent_from(cut), block=block)
    try:
        skus = await _catalog(conn)
        if not skus:
            raise SystemExit("the catalog has no SKUs: seed it first (`marketplace seed`)")
        await history_clone.start(conn)
        scratch = True
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start, initargs=(plan, skus, cut, lay)) as maker:
            bar = Progress(plan.orders + 1, enabled=progress, label="history")
            written = 0

            def advance(orders: int) -> None:
                nonlocal written
                written += orders
                bar.advance(orders, f"{written:,} orders")

            chunks = _chunks(lay, chunk)
            coming = [loop.run_in_executor(maker, _generate, *c) for c in chunks[:ahead]]
            rows = 0
            for n, (first, count) in enumerate(chunks):
                if first == lay.block and lay.copies > 1:  # the block is written: copy it
                    rows += await _copy_block(conn, admin_dsn, lay, copies_per_transaction,
                                              advance)
                out = await coming.pop(0)
                if n + ahead < len(chunks):
                    coming.append(loop.run_in_executor(maker, _generate, *chunks[n + ahead]))
                rows += await _write_chunk(conn, out)
                advance(count)
            if lay.recent == 0 and lay.copies > 1:
                rows += await _copy_block(conn, admin_dsn, lay, copies_per_transaction,
                                          advance)
            members = await loop.run_in_executor(
                maker, _member_rows, await history_members.password_hash(), plan.seed,
                plan.until)
        async with conn.transaction():
            for table, member_rows in members.items():
                await _copy(conn, table, member_rows)
                rows += len(member_rows)
        bar.advance(1, "members")
        await _settle_indexes(conn, sorted({t for t in COLUMNS} | {
            "orders.skus", "analytics.gmv_minute", "analytics.gmv_second",
            "analytics.product_sales"}))
    finally:
        if scratch:
            await history_clone.finish(conn)
        await conn.close()
    return Loaded(plan.orders, plan.members, rows, time.perf_counter() - started, lay.copies)


async def _settle_indexes(conn: asyncpg.Connection, tables: list[str]) -> None:
    """What a restore's `vacuumdb --analyze` would leave: the planner's statistics, and every
    BRIN index's new block ranges summarized (autosummarize does it as ranges fill, but for
    millions of rows at once it would lag behind, and a window read would scan them all)."""
    brin = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
        "WHERE a.amname = 'brin' AND i.indrelid = ANY($1::regclass[])", tables)
    for index in brin:
        await conn.execute("SELECT brin_summarize_new_values($1::regclass)", index["name"])
    for table in tables:
        await conn.execute(f"ANALYZE {table}")


async def _copy_block(conn: asyncpg.Connection, admin_dsn: str, lay: Layout,
                      per_transaction: int, advance: Callable[[int], None]) -> int:
    """The block's copies (history_clone), a few per transaction, on connections of their
    own."""
    return await history_clone.copy(
        conn, COLUMNS, copies=lay.copies, per_transaction=per_transaction,
        connect=lambda: asyncpg.connect(admin_dsn, server_settings=LOADER_SETTINGS),
        workers=COPY_CONNECTIONS, done=lambda copies: advance(copies * lay.block))


def admin_dsn() -> str:
    """The local stack's admin login, or DATABASE_URL when it names a server."""
    import os

    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from services.cli.stack import DataPaths, read_state

    dsn = read_state(DataPaths.default()).get("admin_dsn")
    if not dsn:
        raise SystemExit("no stack: start one (`marketplace up` or `marketplace stack start`) "
                         "or pass --dsn")
    return str(dsn)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marketplace history", description=__doc__)
    p.add_argument("--orders", type=int, required=True, help="orders to add to the history")
    p.add_argument("--days", type=float, default=365.0,
                   help="how far back the history reaches (default 365)")
    p.add_argument("--members", type=int, default=None,
                   help="members who placed them (default: one per 20 orders, at least 1)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="random seed; another one for each run into the same stack")
    p.add_argument("--until", type=datetime.fromisoformat, default=None,
                   help="the newest order's time, ISO 8601 (default: an hour ago)")
    p.add_argument("--chunk", type=int, default=CHUNK, help="orders per transaction")
    p.add_argument("--block", type=int, default=BLOCK,
                   help="orders simulated one by one for the past older than retention; "
                   "the rest of that past is copies of them, each with its own members "
                   f"(default {BLOCK:,})")
    p.add_argument("--dsn", help="admin (superuser) Postgres URL of the stack's database "
                   "(default: the local stack's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def plan_of(args: argparse.Namespace) -> Plan:
    until = args.until or datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    members = args.members or max(1, args.orders // 20)
    return Plan(orders=args.orders, members=members, seed=args.seed,
                start=until - timedelta(days=args.days), until=until)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.orders < 0 or (args.members is not None and args.members < 1):
        print("error: --orders must be >= 0 and --members >= 1", file=sys.stderr)
        return 2
    plan = plan_of(args)
    done = asyncio.run(load(args.dsn or admin_dsn(), plan, chunk=args.chunk, block=args.block,
                            progress=not args.no_progress))
    print(f"history: {done.orders:,} orders of {done.members:,} members from "
          f"{plan.start:%Y-%m-%d %H:%M} to {plan.until:%Y-%m-%d %H:%M} UTC, {done.rows:,} rows "
          f"in {done.seconds:.1f} s ({done.orders / max(done.seconds, 1e-9):,.0f} orders/s; "
          f"the past before retention as {done.copies} copies of a block)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
