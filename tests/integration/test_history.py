"""`marketplace history` on a real Postgres: a small history through the generator is one the
audit finds clean, with its retained rows and its members as the services would have left
them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from seeds.seed import seed_if_empty
from services.cli.audit import run_audit
from services.cli.dbsetup import SERVICES
from services.cli.history import load
from services.cli.history_model import Plan
from services.common.migrations import migrate_service
from tests.infra import FreshDb

ORDERS = 20_000
MEMBERS = 1_000

MakeDb = Callable[..., Awaitable[FreshDb]]


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def history(fresh_db: MakeDb, now: datetime) -> FreshDb:
    """A migrated, seeded database with 20,000 orders over the last 30 days."""
    db = await fresh_db("history")
    for service in SERVICES:
        await migrate_service(db.dsn(service), service)
    await seed_if_empty({"orders": db.dsn("orders")}, progress=False)
    until = now - timedelta(hours=1)
    plan = Plan(orders=ORDERS, members=MEMBERS, seed=7, start=until - timedelta(days=30),
                until=until)
    await load(db.admin_dsn, plan, progress=False, now=now)
    return db


async def test_the_audit_is_clean_over_the_generated_history(history: FreshDb) -> None:
    results = await run_audit(history.auditor_dsn, settle_s=0)
    assert [(c.name, c.violations[:3]) for c in results if not c.ok] == []
    checked = {c.name: c.checked for c in results}
    assert checked["per order, captured - refunded equals what orders believes"] == ORDERS
    assert checked["each member's points and tier follow the rules from their orders"] == MEMBERS
