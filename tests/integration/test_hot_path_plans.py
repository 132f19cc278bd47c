"""No hot-path statement reads the history: each plan, over tables holding a history the
planner takes seriously, reaches its rows through an index and sorts only what is bounded.

The statements are the store modules' own constants, or, for the checkout's batched
statements (look-up, placing, settling), what the store functions send for a batch of
CHECKOUT_BATCH orders, caught by a stand-in connection; the tables hold ~100,000 rows each,
analysed, shaped as production would hold them (a year of orders, purged tables holding
their retention with a sliver expired since the last purge).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from services.analytics import live
from services.analytics import store as analytics_store
from services.cli import audit_window
from services.common import db, inbox, outbox
from services.common import purge as lifecycle
from services.common.migrations import migrate_service
from services.common.settings import ServiceSettings
from services.orders.domain.order import Line, Order, OrderStatus
from services.orders.store import catalog, idempotency, members, placing, settling
from services.orders.store import orders as order_store
from tests.infra import FreshDb

ROWS = 100_000
MEMBERS = 2_000
# Tables that grow with the history: a sequential scan of one is what this test refuses.
HISTORY = {"orders", "order_lines", "idempotency_keys", "outbox", "inbox", "dead_letter",
           "gmv_minute", "gmv_second", "product_sales", "payments_fact", "orders_fact",
           "payments", "journal_entries", "journal_lines", "points_ledger"}
# A sort over more rows than this reads history, not a page or a window.
SORT_BOUND = 10_000
CHECKOUT_BATCH = 8  # a group commit's batch at the peak (settings.checkout_batch_max: more)
RATE = ("checkout", timedelta(milliseconds=100), timedelta(seconds=5))


@dataclass(frozen=True)
class Statement:
    name: str
    schema: str
    sql: str
    args: tuple[Any, ...]


def history_reads(plan: dict[str, Any]) -> Iterator[str]:
    """Each node of the plan that reads by history: a sequential scan of a history table, or
    a sort of more than SORT_BOUND rows."""
    node = plan["Node Type"]
    if "Seq Scan" in node and plan.get("Relation Name") in HISTORY:
        yield f"{node} on {plan['Relation Name']}"
    if node in ("Sort", "Incremental Sort"):
        rows = max(child["Plan Rows"] for child in plan.get("Plans", [plan]))
        if rows > SORT_BOUND:
            yield f"{node} of {rows} rows"
    for child in plan.get("Plans", []):
        yield from history_reads(child)


async def _fill(admin: asyncpg.Connection) -> None:
    """A year of orders for MEMBERS members, and tables holding their retention."""
    # The rows are made as they are, without their triggers' and foreign keys' checks.
    await admin.execute("SET session_replication_role = replica")
    await admin.execute(f"""
        INSERT INTO orders.merchants (id, name, api_key_hash)
            VALUES ('00000000-0000-0000-0000-000000000001', 'm', 'h');
        INSERT INTO orders.products (id, merchant_id, title, category)
            VALUES ('00000000-0000-0000-0000-000000000002',
                    '00000000-0000-0000-0000-000000000001', 'p', 'c');
        INSERT INTO orders.skus (id, product_id, price, stock, initial_stock)
            SELECT md5('sku' || i)::uuid, '00000000-0000-0000-0000-000000000002', 100, 10, 10
              FROM generate_series(1, 100) i;
        INSERT INTO orders.orders (id, member_id, status, subtotal, discount, points_redeemed,
                total, payment_token, idempotency_key, payment_deadline, retry_at, created_at,
                updated_at)
            SELECT md5('o' || i)::uuid, md5('m' || i % {MEMBERS})::uuid,
                   CASE WHEN i % 10000 = 0 THEN 'PENDING' ELSE 'CONFIRMED' END, 100, 0, 0, 100,
                   'tok_visa', 'k' || i, t + interval '15 minutes', t, t, t
              FROM generate_series(1, {ROWS}) i,
                   LATERAL (SELECT now() - (i * interval '1 year' / {ROWS})) AS c(t);
        INSERT INTO orders.order_lines (order_id, line_no, sku_id, product_id, merchant_id,
                category, quantity, unit_price, line_total)
            SELECT md5('o' || i)::uuid, 1, md5('sku' || i % 100 + 1)::uuid,
                   '00000000-0000-0000-0000-000000000002',
                   '00000000-0000-0000-0000-000000000001', 'c', 1, 100, 100
              FROM generate_series(1, {ROWS}) i;
        -- Keys live 24 h and are purged every few minutes: a sliver has expired.
        INSERT INTO orders.idempotency_keys (member_id, key, request_hash, status, created_at,
                expires_at)
            SELECT md5('m' || i)::uuid, 'k' || i, 'h', 'in_flight', t, t + interval '24 hours'
              FROM generate_series(1, {ROWS}) i,
                   LATERAL (SELECT now() - (i * interval '24 hours 10 minutes' / {ROWS})) c(t);
        INSERT INTO orders.outbox (event_id, subject, aggregate_id, payload, headers,
                created_at, published_at)
            SELECT md5('e' || i)::uuid, 'orders.order.placed', i::text, '', '{{}}', t,
                   CASE WHEN i > 20 THEN t END
              FROM generate_series(1, {ROWS}) i,
                   LATERAL (SELECT now() - (i * interval '24 hours 10 minutes' / {ROWS})) c(t);
        INSERT INTO orders.inbox (consumer, event_id, subject, processed_at)
            SELECT 'orders-payments', md5('e' || i)::uuid, 's',
                   now() - (i * interval '8 days 10 minutes' / {ROWS})
              FROM generate_series(1, {ROWS}) i;
        INSERT INTO analytics.gmv_minute (minute, gmv, orders)
            SELECT date_trunc('minute', now()) - i * interval '1 minute', 100, 1
              FROM generate_series(0, {ROWS}) i;
        INSERT INTO analytics.gmv_second (second, gmv, orders)
            SELECT date_trunc('second', now()) - i * interval '1 second' * 3, 100, 1
              FROM generate_series(0, {ROWS}) i;
        INSERT INTO analytics.product_sales (minute, sku_id, product_id, units, gmv)
            SELECT date_trunc('minute', now()) - (i / 2) * interval '1 minute',
                   md5('sku' || i)::uuid, md5('p' || i % 500)::uuid, 1, 100
              FROM generate_series(0, {ROWS}) i;
        INSERT INTO analytics.payments_fact (payment_id, status, status_rank, first_seen_at,
                updated_at)
            SELECT md5('pay' || i)::uuid, 'CAPTURED', 2, t, t
              FROM generate_series(1, {ROWS}) i,
                   LATERAL (SELECT now() - (i * interval '1 year' / {ROWS})) c(t);
        INSERT INTO orders.dead_letter (consumer, event_id, subject, payload, headers, error,
                deliveries, failed_at, retried_at)
            SELECT 'orders-payments', md5('d' || i)::uuid, 's', '', '{{}}', 'e', 5, t, t
              FROM generate_series(1, {ROWS}) i,
                   LATERAL (SELECT now() - (i * interval '30 days 10 minutes' / {ROWS})) c(t);
        INSERT INTO payments.payments (id, order_id, member_id, merchant_id, status, currency,
                amount, captured, commission, request_hash, created_at, updated_at)
            SELECT md5('pay' || i)::uuid, md5('o' || i)::uuid, md5('m' || i % {MEMBERS})::uuid,
                   '00000000-0000-0000-0000-000000000001', 'CAPTURED', 'CNY', 100, 100, 5, 'h',
                   t, t
              FROM generate_series(1, {ROWS}) i,
                   LATERAL (SELECT now() - (i * interval '1 year' / {ROWS})) c(t);
        INSERT INTO payments.journal_entries (id, payment_id, kind, currency, created_at)
            SELECT i, md5('pay' || i)::uuid, 'capture', 'CNY', now() - (i * interval '1 year'
                   / {ROWS})
              FROM generate_series(1, {ROWS}) i ORDER BY i DESC;
        INSERT INTO membership.points_ledger (member_id, delta, balance_after, reason,
                order_id, created_at)
            SELECT md5('m' || i % {MEMBERS})::uuid, 1, i, 'earn', md5('o' || i)::uuid,
                   now() - (i * interval '1 year' / {ROWS})
              FROM generate_series({ROWS}, 1, -1) i;
    """)
    await admin.execute("ANALYZE")


@pytest.fixture(scope="module")
async def history(pg_admin_dsn: str) -> AsyncIterator[FreshDb]:
    from tests.infra import create_fresh_db, drop_db

    db = await create_fresh_db(pg_admin_dsn, "plans")
    for service in ("orders", "payments", "membership", "analytics"):
        await migrate_service(db.dsn(service), service)
    admin = await asyncpg.connect(db.admin_dsn)
    try:
        await _fill(admin)
    finally:
        await admin.close()
    yield db
    await drop_db(pg_admin_dsn, db.name)


def _statements() -> list[Statement]:
    now = datetime.now(UTC)
    member, order = uuid.UUID(int=0), uuid.UUID(int=0)
    settings = ServiceSettings(database_url="postgresql://unused")
    purges = [("orders", p) for p in [*lifecycle.shared(settings), idempotency.PURGE]]
    purges.append(("analytics", analytics_store.seconds_purge(timedelta(days=7))))
    minute = now.replace(second=0, microsecond=0)
    since = now - timedelta(hours=1)
    return [
        Statement("order view", "orders", order_store.GET, (order, member)),
        Statement("order lines", "orders", order_store.LINES, ([order, uuid.uuid4()],)),
        Statement("order list", "orders", order_store.LIST_FIRST, (member, 21)),
        Statement("order list, a later page", "orders", order_store.LIST_AFTER,
                  (member, now - timedelta(days=200), order, 21)),
        Statement("recovery scan", "orders", order_store.CLAIM_DUE, (20, 10.0, 5.0, 120.0)),
        Statement("points to settle", "orders", order_store.POINTS_DUE, (20,)),
        Statement("outbox relay", "orders", outbox.DRAIN, (500, [1, 2, 3])),
        Statement("inbox claim", "orders", inbox.CLAIM, ("orders-payments", [order], ["s"])),
        *[Statement(f"purge of {p.table}", schema, p.sql, (1000, p.keep))
          for schema, p in purges],
        Statement("dashboard: day", "analytics", live.DAY_TOTALS, (minute - live.DAY,)),
        Statement("dashboard: orders/s", "analytics", live.RECENT_ORDERS,
                  (now - timedelta(seconds=10), now)),
        Statement("dashboard: chart", "analytics", live.CHART, (minute - timedelta(minutes=29),)),
        Statement("dashboard: payments", "analytics", live.PAYMENT_RATE,
                  (now - live.PAYMENT_SPAN, ["CAPTURED"])),
        Statement("dashboard: top products", "analytics", live.TOP_PRODUCTS,
                  (minute - timedelta(hours=1), live.TOP)),
        *[Statement(f"audit --since: {name}", "orders", sql, (since,))
          for name, sql in audit_window.WINDOW_QUERIES.items()],
        Statement("audit --since: orders and payments of the window", "orders",
                  audit_window.PAIRS, ([order], [order])),
        Statement("audit --since: journal entries of the window's payments", "orders",
                  audit_window.ENTRIES, ([order],)),
    ]


def _md5_uuid(text: str) -> uuid.UUID:
    """The id `md5(text)::uuid` gives in `_fill`."""
    return uuid.UUID(hashlib.md5(text.encode()).hexdigest())


class Recorder:
    """Stands in for a connection: keeps each statement and its arguments, runs none."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.sent.append((sql, args))
        return []

    async def fetchval(self, sql: str, *args: Any) -> None:
        self.sent.append((sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, list[uuid.UUID]]:
        self.sent.append((sql, args))
        return {"done": [], "gone": []}


def _order(n: int, *, order_id: uuid.UUID, status: OrderStatus) -> Order:
    """The n-th order of a batch: its own member, two lines of SKUs from `_fill`."""
    now = datetime.now(UTC)
    lines = tuple(Line(sku_id=_md5_uuid(f"sku{(3 * n + k) % 100 + 1}"),
                       product_id=uuid.UUID("00000000-0000-0000-0000-000000000002"),
                       merchant_id=uuid.UUID("00000000-0000-0000-0000-000000000001"),
                       category="c", quantity=1, unit_price=100, line_total=100)
                  for k in range(2))
    return Order(id=order_id, member_id=_md5_uuid(f"m{n}"), status=status, subtotal=200,
                 discount=0, points_redeemed=0, total=200, currency="CNY",
                 payment_token="tok_visa", payment_id=uuid.uuid4() if status != "PENDING"
                 else None, cancel_reason=None, idempotency_key=f"new{n}",
                 payment_deadline=now + timedelta(minutes=15), points_pending=False,
                 created_at=now, lines=lines)


def _event(order: Order, subject: str) -> outbox.Pending:
    return outbox.Pending(uuid.uuid4(), subject, str(order.id), b"", {"ce-type": subject})


async def _sent(name: str, call: Any) -> list[Statement]:
    """The statements `call(connection)` sends, named `name` (numbered past the first)."""
    recorder = Recorder()
    await call(recorder)
    return [Statement(name if i == 0 else f"{name} ({i + 1})", "orders", sql, args)
            for i, (sql, args) in enumerate(recorder.sent)]


async def _checkout_statements() -> list[Statement]:
    """Look-up, placing and settling as the checkout pipeline sends them for one batch."""
    batch = range(1, CHECKOUT_BATCH + 1)
    new = [_order(n, order_id=uuid.uuid4(), status=OrderStatus.PENDING) for n in batch]
    skus: Sequence[uuid.UUID] = list(dict.fromkeys(x.sku_id for o in new for x in o.lines))
    # The PENDING orders `_fill` made (one in 10,000), confirmed by the batch.
    pending = [_order(n, order_id=_md5_uuid(f"o{10_000 * n}"), status=OrderStatus.CONFIRMED)
               for n in batch]
    places = [placing.Placing(order=o, request_hash="h", retry_at=o.created_at,
                              event=_event(o, "orders.order.placed")) for o in new]
    settles = [settling.Settling(order=o, reply_status=201, reply_body=b"{}",
                                 events=(_event(o, "orders.order.confirmed"),))
               for o in pending]
    return [
        *await _sent("look-up: SKUs", lambda c: catalog.skus_for_checkout(c, skus)),
        *await _sent("look-up: one SKU", lambda c: catalog.skus_for_checkout(c, skus[:1])),
        *await _sent("look-up: tiers",
                     lambda c: members.tiers_of(c, [o.member_id for o in new])),
        *await _sent("placing", lambda c: placing.place(c, places, claim_timeout_s=30.0,
                                                        rate=RATE)),
        *await _sent("settling", lambda c: settling.settle(c, settles)),
    ]


async def _plan(conn: asyncpg.Connection, statement: Statement) -> dict[str, Any]:
    await conn.execute(f"SET search_path TO {statement.schema}")
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement.sql}", *statement.args)
    doc = orjson.loads(raw) if isinstance(raw, str) else raw  # decoded by the json codec
    plan: dict[str, Any] = doc[0]["Plan"]
    return plan


async def test_no_hot_path_statement_reads_the_history(history: FreshDb) -> None:
    # With the services' codecs: the checkout's statements take jsonb headers as dicts.
    conn = await db.connect(history.admin_dsn, schema="orders", application_name="plans")
    try:
        offending = {}
        for statement in [*_statements(), *await _checkout_statements()]:
            plan = await _plan(conn, statement)
            if reads := list(history_reads(plan)):
                offending[statement.name] = reads
    finally:
        await conn.close()
    assert offending == {}


async def test_a_statement_that_reads_the_history_is_caught(history: FreshDb) -> None:
    """The check itself: a filter no index serves, and a sort of every order, are refused."""
    conn = await asyncpg.connect(history.admin_dsn)
    try:
        by_total = await _plan(conn, Statement(
            "by total", "orders", "SELECT id FROM orders WHERE total = $1", (100,)))
        sorted_all = await _plan(conn, Statement(
            "all, by total", "orders", "SELECT id FROM orders ORDER BY total LIMIT 10", ()))
    finally:
        await conn.close()
    assert list(history_reads(by_total)) == ["Seq Scan on orders"]
    assert [r for r in history_reads(sorted_all) if r.startswith("Sort of")], sorted_all
