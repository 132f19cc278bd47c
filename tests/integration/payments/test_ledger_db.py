"""The database itself refuses an unbalanced journal entry and any edit of the journal."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.payments import store
from services.payments.domain import ledger
from tests.integration.payments.harness import Running, authorize_request


async def _connect(payments: Running) -> asyncpg.Connection:
    return await asyncpg.connect(
        payments.db.dsn("payments"), server_settings={"search_path": "payments"}
    )


async def test_an_unbalanced_entry_is_refused(payments: Running) -> None:
    """By the statement that writes its lines, or at commit when it has none."""
    paid = await payments.stub.Authorize(authorize_request())
    conn = await _connect(payments)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            async with conn.transaction():
                entry = await conn.fetchval(
                    "INSERT INTO journal_entries (payment_id, kind, currency) "
                    "VALUES ($1, 'refund', 'CNY') RETURNING id", uuid.UUID(paid.id),
                )
                await conn.execute(
                    "INSERT INTO journal_lines (entry_id, account, amount) "
                    "VALUES ($1, 'refunds', 100), ($1, 'member_funding', -99)", entry,
                )
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO journal_entries (payment_id, kind, currency) "
                    "VALUES ($1, 'refund', 'CNY')", uuid.UUID(paid.id),
                )
        # Lines added later to a balanced entry, even ones that cancel out over two
        # statements: each statement must leave every entry it touches balanced.
        authorize = await conn.fetchval("SELECT id FROM journal_entries")
        for lines in ("($1, 'refunds', 5)", "($1, 'refunds', 5), ($1, 'member_funding', -4)"):
            with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
                await conn.execute(
                    f"INSERT INTO journal_lines (entry_id, account, amount) VALUES {lines}",
                    authorize)
        assert await conn.fetchval("SELECT count(*) FROM journal_entries") == 1  # authorize
        assert await conn.fetchval("SELECT sum(amount) FROM journal_lines") == 0
    finally:
        await conn.close()


async def test_the_journal_is_append_only(payments: Running) -> None:
    await payments.stub.Authorize(authorize_request())
    conn = await _connect(payments)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE journal_lines SET amount = amount * 2")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("DELETE FROM journal_entries")
    finally:
        await conn.close()


async def test_a_sale_posts_both_entries_each_with_its_own_balanced_lines(
    payments: Running,
) -> None:
    """One statement writes the authorization and the capture of a sale: two entries, in
    that order, each balancing by itself; and it refuses two entries of one kind."""
    paid = await payments.stub.Authorize(authorize_request(capture_key=f"cap-{uuid.uuid4()}"))
    conn = await _connect(payments)
    try:
        entries = await conn.fetch(
            "SELECT e.id, e.kind, count(l.*) AS lines, sum(l.amount) AS total "
            "FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id "
            "WHERE e.payment_id = $1 GROUP BY e.id ORDER BY e.id", uuid.UUID(paid.id))
        authorize = ledger.authorize(100)
        with pytest.raises(ValueError, match="distinct kinds"):
            await store.post_all(conn, payment_id=uuid.UUID(paid.id), currency="CNY",
                                 postings=[authorize, authorize])
    finally:
        await conn.close()

    assert [e["kind"] for e in entries] == ["authorize", "capture"]
    assert all(e["lines"] >= 2 and e["total"] == 0 for e in entries)
