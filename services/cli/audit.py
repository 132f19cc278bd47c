"""`marketplace audit`: cross-service invariants, read through the read-only auditor role."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import orjson

from services.cli import audit_discounts, audit_points


@dataclass
class Check:
    name: str
    checked: int
    violations: list[str] = field(default_factory=list)
    # Event-driven projections may lag; such checks are retried while the system settles.
    eventual: bool = False

    @property
    def ok(self) -> bool:
        return not self.violations


CheckFn = Callable[[asyncpg.Connection], Awaitable[Check]]


async def check_payments_match_orders(conn: asyncpg.Connection) -> Check:
    """Per order, captured - refunded is what orders believes it kept: for CONFIRMED its
    total less its (partial) refunds, else 0."""
    rows = await conn.fetch(
        """
        SELECT o.id, o.status, o.total, o.refunded AS order_refunded, p.id AS payment_id,
               coalesce(p.captured, 0) AS captured, coalesce(p.refunded, 0) AS refunded
          FROM orders.orders o LEFT JOIN payments.payments p ON p.order_id = o.id
         WHERE o.status <> 'PENDING'
        """
    )
    bad = []
    for r in rows:
        kept = r["captured"] - r["refunded"]
        expected = r["total"] - r["order_refunded"] if r["status"] == "CONFIRMED" else 0
        if r["status"] == "REFUNDED" and r["order_refunded"] != r["total"]:
            bad.append(f"order {r['id']} is REFUNDED but records {r['order_refunded']} of its "
                       f"{r['total']} refunded")
        elif r["status"] == "CONFIRMED" and r["payment_id"] is None:
            bad.append(f"order {r['id']} is CONFIRMED for {r['total']} but has no payment")
        elif kept != expected:
            bad.append(
                f"order {r['id']} is {r['status']} (so {expected} kept) but payment "
                f"{r['payment_id']} keeps {kept} (captured {r['captured']} - refunded "
                f"{r['refunded']})"
            )
    return Check("per order, captured - refunded equals what orders believes", len(rows), bad)


async def check_merchant_payables(conn: asyncpg.Connection) -> Check:
    """The journal's payable per merchant (and the platform's commission) equals the captures
    net of commission, less refunds net of the commission they return (floor(k * R / C))."""
    rows = await conn.fetch(
        r"""
        WITH p AS (
          SELECT merchant_id, captured, commission, refunded,
                 CASE WHEN captured > 0 THEN commission * refunded / captured ELSE 0 END AS back
            FROM payments.payments),
        expected AS (
          SELECT 'merchant_payable:' || merchant_id AS account,
                 sum(captured - commission - (refunded - back)) AS amount
            FROM p GROUP BY merchant_id
          UNION ALL
          SELECT 'platform_commission', coalesce(sum(commission - back), 0) FROM p),
        journal AS (
          SELECT account, sum(amount) AS amount FROM payments.journal_lines
           WHERE account LIKE 'merchant\_payable:%' OR account = 'platform_commission'
           GROUP BY account)
        SELECT account, coalesce(e.amount, 0) AS expected, coalesce(j.amount, 0) AS journal
          FROM expected e FULL JOIN journal j USING (account)
        """
    )
    bad = [
        f"{r['account']}: the journal holds {r['journal']} but the payments' captures net of "
        f"commission and refunds come to {r['expected']}"
        for r in rows
        if r["expected"] != r["journal"]
    ]
    return Check("each merchant's payable in the journal matches its payments", len(rows), bad)


async def check_no_orphan_charges(conn: asyncpg.Connection) -> Check:
    """Money kept by payments must belong to a confirmed order (never a double charge)."""
    rows = await conn.fetch(
        """
        SELECT p.id, p.order_id, p.captured - p.refunded AS kept, o.status
          FROM payments.payments p LEFT JOIN orders.orders o ON o.id = p.order_id
         WHERE p.captured - p.refunded > 0 AND (o.status IS NULL OR o.status <> 'CONFIRMED')
           AND coalesce(o.status, '') <> 'PENDING'
        """
    )
    total = await conn.fetchval("SELECT count(*) FROM payments.payments")
    bad = [
        f"payment {r['id']} keeps {r['kept']} for order {r['order_id']} ({r['status']})"
        for r in rows
    ]
    return Check("no money kept without a confirmed order", total, bad)


async def check_stock_conservation(conn: asyncpg.Connection) -> Check:
    """initial + restocked = on hand + held + sold, and held/sold match the orders."""
    rows = await conn.fetch(
        """
        SELECT s.id, s.initial_stock, s.restocked, s.stock, s.held, s.sold,
               coalesce(l.pending, 0) AS pending, coalesce(l.confirmed, 0) AS confirmed
          FROM orders.skus s
          LEFT JOIN (
            SELECT ol.sku_id,
                   sum(ol.quantity) FILTER (WHERE o.status = 'PENDING') AS pending,
                   sum(ol.quantity) FILTER (WHERE o.status = 'CONFIRMED') AS confirmed
              FROM orders.order_lines ol JOIN orders.orders o ON o.id = ol.order_id
             GROUP BY ol.sku_id
          ) l ON l.sku_id = s.id
        """
    )
    bad = []
    for r in rows:
        if r["initial_stock"] + r["restocked"] != r["stock"] + r["held"] + r["sold"]:
            bad.append(
                f"sku {r['id']}: initial {r['initial_stock']} + restocked {r['restocked']}"
                f" != on hand {r['stock']} + held {r['held']} + sold {r['sold']}"
            )
        if r["sold"] != r["confirmed"] or r["held"] != r["pending"]:
            bad.append(
                f"sku {r['id']}: sold {r['sold']}/held {r['held']} but orders say "
                f"{r['confirmed']} confirmed/{r['pending']} pending"
            )
        if r["stock"] < 0:
            bad.append(f"sku {r['id']}: oversold, stock {r['stock']}")
    return Check(
        "stock is conserved (initial = on hand + held + sold), never oversold", len(rows), bad
    )


async def check_ledger_balanced(conn: asyncpg.Connection) -> Check:
    """Double entry: every journal entry, and so the whole journal, sums to zero."""
    unbalanced = await conn.fetch(
        "SELECT entry_id, sum(amount) AS total FROM payments.journal_lines "
        "GROUP BY entry_id HAVING sum(amount) <> 0"
    )
    entries = await conn.fetchval("SELECT count(*) FROM payments.journal_entries")
    grand = await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM payments.journal_lines")
    bad = [f"journal entry {r['entry_id']} sums to {r['total']}" for r in unbalanced]
    if grand != 0:
        bad.append(f"the journal sums to {grand}, not 0")
    return Check("the payments ledger balances (every entry sums to zero)", entries, bad)


async def check_no_stuck_orders(conn: asyncpg.Connection) -> Check:
    rows = await conn.fetch(
        "SELECT id, payment_deadline FROM orders.orders "
        "WHERE status = 'PENDING' AND payment_deadline < now() - interval '1 minute'"
    )
    pending = await conn.fetchval("SELECT count(*) FROM orders.orders WHERE status = 'PENDING'")
    bad = [f"order {r['id']} still PENDING past its deadline {r['payment_deadline']}" for r in rows]
    return Check("no order stays PENDING past its payment deadline", pending, bad)


async def check_gmv(conn: asyncpg.Connection) -> Check:
    """Analytics GMV = sum of confirmed totals; refunds = what orders records refunded of
    them (all of a REFUNDED order, part of a partially refunded CONFIRMED one)."""
    expected = await conn.fetchrow(
        "SELECT coalesce(sum(total) FILTER (WHERE status IN ('CONFIRMED', 'REFUNDED')), 0) AS gmv,"
        "       coalesce(sum(refunded) FILTER (WHERE status IN ('CONFIRMED', 'REFUNDED')), 0)"
        "         AS refunds,"
        "       count(*) FILTER (WHERE status IN ('CONFIRMED', 'REFUNDED')) AS orders "
        "FROM orders.orders"
    )
    seen = await conn.fetchrow(
        "SELECT coalesce(sum(gmv), 0) AS gmv, coalesce(sum(refunds), 0) AS refunds, "
        "coalesce(sum(orders), 0) AS orders FROM analytics.gmv_minute"
    )
    bad = [
        f"analytics {k} {seen[k]} != orders {expected[k]}"
        for k in ("gmv", "refunds", "orders")
        if seen[k] != expected[k]
    ]
    return Check(
        "analytics GMV and refunds equal the confirmed and refunded orders",
        expected["orders"],
        bad,
        eventual=True,
    )


CHECKS: list[CheckFn] = [
    check_payments_match_orders,
    check_no_orphan_charges,
    check_stock_conservation,
    check_ledger_balanced,
    check_merchant_payables,
    check_no_stuck_orders,
    audit_points.check_points,
    audit_discounts.check_discounts,
    check_gmv,
]


async def run_audit(dsn: str, *, settle_s: float = 15.0) -> list[Check]:
    """Run every check; eventual ones are retried for up to `settle_s` until they hold."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + settle_s
        while True:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                results = [await fn(conn) for fn in CHECKS]
            lagging = [c for c in results if not c.ok and c.eventual]
            if not lagging or time.monotonic() > deadline:
                return results
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def auditor_dsn() -> str:
    """The local stack's auditor login, or DATABASE_URL when it names a server."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from services.cli import launcher

    return launcher.local_auditor_dsn()


def report(results: list[Check], *, as_json: bool) -> str:
    if as_json:
        return orjson.dumps(
            [
                {"name": c.name, "ok": c.ok, "checked": c.checked, "violations": c.violations}
                for c in results
            ],
            option=orjson.OPT_INDENT_2,
        ).decode()
    lines = []
    for c in results:
        mark = "ok  " if c.ok else "FAIL"
        lines.append(f"[{mark}] {c.name}: {c.checked} checked, {len(c.violations)} violations")
        lines += [f"         - {v}" for v in c.violations[:20]]
    failed = sum(not c.ok for c in results)
    lines.append("audit clean" if not failed else f"audit FAILED: {failed} invariant(s) violated")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketplace audit", description=__doc__)
    parser.add_argument("--dsn", help="Postgres URL (default: the local stack's auditor role)")
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds to wait for event-driven projections to catch up",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    ns = parser.parse_args(argv)
    dsn = ns.dsn or auditor_dsn()
    results = asyncio.run(run_audit(dsn, settle_s=ns.settle))
    print(report(results, as_json=ns.json))
    return 0 if all(c.ok for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
