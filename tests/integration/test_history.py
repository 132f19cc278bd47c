"""`marketplace history` on a real Postgres: a history made by the generator (its past before
retention copied from a block, as for ten million orders) is one the audit finds clean,
`audit --since` checks what changed in its window and nothing before it, and the purges
remove from it exactly what retention says."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from seeds.seed import seed_if_empty
from services.analytics import store as analytics_store
from services.analytics.settings import AnalyticsSettings
from services.cli.audit import Check, run_audit
from services.cli.dbsetup import SERVICES
from services.cli.history import load
from services.cli.history_model import Plan
from services.common import purge as lifecycle
from services.common.migrations import migrate_service
from services.common.settings import ServiceSettings
from services.orders.store import idempotency
from services.payments import processor
from services.payments import store as payments_store
from services.payments.commands import AuthorizePayment
from services.payments.settings import PaymentsSettings
from tests.infra import FreshDb, create_fresh_db, drop_db

ORDERS = 20_000
MEMBERS = 1_000
DAYS = 30
BLOCK = 4_000  # the 21 days before retention: about 14,000 orders, 4 copies of 3,500
DISCOUNTS = "each order's discount is the one of the tier recorded on it"


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
async def history(pg_admin_dsn: str, now: datetime) -> AsyncIterator[FreshDb]:
    """A migrated, seeded database with 20,000 orders over the 30 days up to an hour ago, the
    days older than retention made as copies of a block."""
    db = await create_fresh_db(pg_admin_dsn, "history")
    for service in SERVICES:
        await migrate_service(db.dsn(service), service)
    await seed_if_empty({"orders": db.dsn("orders")}, progress=False)
    until = now - timedelta(hours=1)
    plan = Plan(orders=ORDERS, members=MEMBERS, seed=7, start=until - timedelta(days=DAYS),
                until=until)
    done = await load(db.admin_dsn, plan, block=BLOCK, progress=False, now=now,
                      copies_per_transaction=1)  # three transactions on two connections
    assert done.copies == 4
    yield db
    await drop_db(pg_admin_dsn, db.name)


def failures(results: list[Check]) -> list[tuple[str, list[str]]]:
    return [(c.name, c.violations[:3]) for c in results if not c.ok]


async def test_the_audit_is_clean_over_the_generated_history(history: FreshDb) -> None:
    results = await run_audit(history.auditor_dsn, settle_s=0)
    assert failures(results) == []
    checked = {c.name: c.checked for c in results}
    assert checked["per order, captured - refunded equals what orders believes"] == ORDERS
    assert checked[DISCOUNTS] == ORDERS
    counts = (await history.sql(
        "SELECT (SELECT count(*) FROM orders.orders) AS orders,"
        " (SELECT count(*) FROM payments.payments) AS payments,"
        " (SELECT count(*) FROM membership.members) AS members,"
        " (SELECT count(*) FROM orders.orders WHERE status = 'REFUNDED') AS refunded,"
        " (SELECT count(*) FROM orders.orders WHERE points_redeemed > 0) AS redeeming,"
        " (SELECT count(*) FROM orders.outbox) AS events"))[0]
    assert (counts["orders"], counts["payments"], counts["members"]) == (ORDERS, ORDERS,
                                                                         MEMBERS)
    assert counts["refunded"] > 0 and counts["redeeming"] > 0 and counts["events"] > 0
    # The loader's working tables are gone with it.
    assert await history.sql("SELECT 1 FROM pg_namespace WHERE nspname = 'history_load'") == []


async def test_each_payment_holds_what_payments_derives_from_its_order(
        history: FreshDb) -> None:
    """The copies' payments too: a replayed sale finds its fingerprint, and the processor's
    reference is the one it would give the copy's order."""
    rows = await history.sql(
        "SELECT p.order_id, p.member_id, p.merchant_id, p.amount, p.currency, p.processor_ref,"
        " p.request_hash, o.payment_token FROM payments.payments p"
        " JOIN orders.orders o ON o.id = p.order_id")
    assert len(rows) == ORDERS
    wrong = [r["order_id"] for r in rows if r["request_hash"] != AuthorizePayment(
        key=f"auth:{r['order_id']}", order_id=r["order_id"], member_id=r["member_id"],
        merchant_id=r["merchant_id"], amount=r["amount"], currency=r["currency"],
        token=r["payment_token"], capture_key=f"capture:{r['order_id']}").fingerprint()
        or r["processor_ref"] not in (None, processor._reference(
            "auth", f"authorize:{r['order_id']}"))]
    assert wrong == []
    assert sum(r["processor_ref"] is not None for r in rows) > 0.9 * ORDERS


async def test_the_window_reads_brin_indexes_are_summarized(history: FreshDb) -> None:
    """`audit --since` finds the journal entries and points of its window through BRIN
    indexes, which see only summarized block ranges: they summarize each range as it fills
    (autosummarize), and the loader leaves none to summarize."""
    indexes = await history.sql(
        "SELECT n.nspname || '.' || c.relname AS name, c.reloptions FROM pg_class c "
        "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE a.amname = 'brin'")
    assert {i["name"] for i in indexes} == {"payments.journal_entries_created_at",
                                            "membership.points_ledger_created_at"}
    admin = await asyncpg.connect(history.admin_dsn)  # the owner
    try:
        for index in indexes:
            assert "autosummarize=on" in index["reloptions"]
            left = await admin.fetchval("SELECT brin_summarize_new_values($1::regclass)",
                                        index["name"])
            assert left == 0, index["name"]
    finally:
        await admin.close()


async def _order_updated(db: FreshDb, *, after: datetime | None = None,
                         before: datetime | None = None) -> uuid.UUID:
    [row] = await db.sql(
        "SELECT id FROM orders.orders WHERE ($1::timestamptz IS NULL OR updated_at >= $1) "
        "AND ($2::timestamptz IS NULL OR updated_at < $2) ORDER BY updated_at LIMIT 1",
        after, before)
    return row["id"]


async def test_audit_since_finds_a_violation_in_its_window_and_ignores_one_before(
    history: FreshDb, now: datetime,
) -> None:
    since = now - timedelta(days=2)
    inside = await _order_updated(history, after=since)
    before = await _order_updated(history, before=since - timedelta(hours=1))
    admin = await asyncpg.connect(history.admin_dsn)
    try:
        # Each recorded with a discount rate that is not its tier's.
        await admin.execute("UPDATE orders.orders SET discount_bps = discount_bps + 1 "
                            "WHERE id = ANY($1::uuid[])", [inside, before])
        windowed = {c.name: c for c in await run_audit(history.auditor_dsn, settle_s=0,
                                                         since=since)}
        whole = {c.name: c for c in await run_audit(history.auditor_dsn, settle_s=0)}
    finally:
        await admin.execute("UPDATE orders.orders SET discount_bps = discount_bps - 1 "
                            "WHERE id = ANY($1::uuid[])", [inside, before])
        await admin.close()
    found = " ".join(windowed[DISCOUNTS].violations)
    assert str(inside) in found and str(before) not in found
    assert [n for n, c in windowed.items() if not c.ok] == [DISCOUNTS]
    assert len(whole[DISCOUNTS].violations) == 2


STOCK = "stock is conserved (initial = on hand + held + sold), never oversold"


async def test_audit_since_finds_units_held_for_no_pending_order(
    history: FreshDb, now: datetime,
) -> None:
    """A SKU holding a unit no PENDING order holds: found by both modes, the window's from
    the SKU's own counters and the PENDING orders only (not its history of order lines)."""
    [sku] = await history.sql("SELECT id FROM orders.skus ORDER BY sold DESC LIMIT 1")
    admin = await asyncpg.connect(history.admin_dsn)
    try:
        await admin.execute("UPDATE orders.skus SET held = held + 1, stock = stock - 1, "
                            "updated_at = now() WHERE id = $1", sku["id"])
        windowed = {c.name: c for c in await run_audit(
            history.auditor_dsn, settle_s=0, since=datetime.now(UTC) - timedelta(minutes=5))}
        whole = {c.name: c for c in await run_audit(history.auditor_dsn, settle_s=0)}
    finally:
        await admin.execute("UPDATE orders.skus SET held = held - 1, stock = stock + 1 "
                            "WHERE id = $1", sku["id"])
        await admin.close()
    for found in (windowed, whole):
        assert [n for n, c in found.items() if not c.ok] == [STOCK]
        assert found[STOCK].violations == [f"sku {sku['id']}: held 1 but its orders say "
                                           "0 pending"]


def _settings(**retention: float) -> ServiceSettings:
    return ServiceSettings.model_construct().model_copy(update=retention)


async def _purge(dsn: str, purges: list[lifecycle.Purge]) -> dict[str, int]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        done = await lifecycle.purge_all(pool, purges, lock="history-test")
    finally:
        await pool.close()
    assert done is not None
    return done


async def test_the_generated_history_holds_only_what_retention_keeps(history: FreshDb) -> None:
    """At the services' retention the purges find nothing to remove: the generator wrote
    the outbox, inbox and stored answers only as far back as they are kept."""
    shared = lifecycle.shared(_settings())
    own = {
        "orders": [idempotency.PURGE],
        "payments": [payments_store.idempotency_purge(
            timedelta(days=PaymentsSettings.model_fields["idempotency_retention_days"].default))],
        "analytics": [analytics_store.seconds_purge(
            timedelta(days=AnalyticsSettings.model_fields["second_retention_days"].default))],
    }
    for service in SERVICES:
        done = await _purge(history.dsn(service), shared + own.get(service, []))
        assert set(done.values()) == {0}, service
    [row] = await history.sql("SELECT (SELECT count(*) FROM orders.idempotency_keys) AS keys,"
                              " (SELECT count(*) FROM analytics.gmv_second) AS seconds")
    assert row["keys"] > 0 and row["seconds"] > 0  # the recent ones are there


async def test_a_shorter_outbox_retention_purges_exactly_the_older_rows(
    history: FreshDb, now: datetime,
) -> None:
    """Retention ending in a quiet minute of the history (no row within 30 s of it): the
    purge removes every row published before it and nothing after (pending rows, the seed's
    catalog events here, are never purged)."""
    rows = [r["published_at"] for r in await history.sql(
        "SELECT published_at FROM orders.outbox WHERE published_at IS NOT NULL "
        "ORDER BY published_at")]
    gaps = [(b - a, a + (b - a) / 2) for a, b in itertools.pairwise(rows)
            if a > now - timedelta(hours=16)]
    cut = next(mid for gap, mid in gaps if gap > timedelta(minutes=1))
    older = sum(r < cut for r in rows)
    assert 0 < older < len(rows)
    keep_h = (datetime.now(UTC) - cut).total_seconds() / 3600
    done = await _purge(history.dsn("orders"), lifecycle.shared(_settings(
        outbox_retention_h=keep_h)))
    assert done["outbox"] == older
    [left] = await history.sql("SELECT count(*) AS n, min(published_at) AS oldest "
                               "FROM orders.outbox WHERE published_at IS NOT NULL")
    assert left["n"] == len(rows) - older and left["oldest"] > cut
