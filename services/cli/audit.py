"""`marketplace audit`: cross-service invariants, read through the read-only auditor role."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from services.cli import audit_discounts, audit_points
from services.cli.audit_window import Report, Scope, to_stderr


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


CheckFn = Callable[[asyncpg.Connection, Scope], Awaitable[Check]]
ORDER_STATES = (
    "SELECT o.id, o.status, o.total, o.refunded AS order_refunded, p.id AS payment_id, "
    "       coalesce(p.captured, 0) AS captured, coalesce(p.refunded, 0) AS refunded "
    "  FROM orders.orders o LEFT JOIN payments.payments p ON p.order_id = o.id "
    " WHERE o.status <> 'PENDING' AND ($1::uuid[] IS NULL OR o.id = ANY($1::uuid[]))"
)


async def rows(conn: asyncpg.Connection, scope: Scope, what: str, sql: str,
               *args: object) -> AsyncIterator[asyncpg.Record]:
    """The rows of `sql` through a server-side cursor (the caller's transaction holds it),
    with progress every 100,000 rows."""
    n = 0
    async for r in conn.cursor(sql, *args, prefetch=5_000):
        n += 1
        scope.counted(what, n)
        yield r


async def check_payments_match_orders(conn: asyncpg.Connection, scope: Scope) -> Check:
    """Per order, captured - refunded is what orders believes it kept: for CONFIRMED its
    total less its (partial) refunds, else 0."""
    checked, bad = 0, []
    async for r in rows(conn, scope, "orders", ORDER_STATES, scope.orders):
        checked += 1
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
    return Check("per order, captured - refunded equals what orders believes", checked, bad)


# What each payment owes its merchant and the platform after commission and the refunds'
# share of it (floor(k * R / C)), and what the journal holds for it on those accounts.
_PAYMENT_SHARES = r"""
SELECT p.id, 'merchant_payable:' || p.merchant_id AS account,
       p.captured - p.commission - (p.refunded - b.back) AS owed,
       p.commission - b.back AS commission,
       coalesce(sum(l.amount) FILTER (WHERE l.account = 'merchant_payable:' || p.merchant_id),
                0) AS journal_payable,
       coalesce(sum(l.amount) FILTER (WHERE l.account = 'platform_commission'), 0)
         AS journal_commission
  FROM payments.payments p
  CROSS JOIN LATERAL (SELECT CASE WHEN p.captured > 0
                             THEN p.commission * p.refunded / p.captured ELSE 0 END) b(back)
  LEFT JOIN payments.journal_entries e ON e.payment_id = p.id
  LEFT JOIN payments.journal_lines l ON l.entry_id = e.id
 WHERE p.id = ANY($1::uuid[])
 GROUP BY p.id, p.merchant_id, p.captured, p.commission, p.refunded, b.back
"""
_MERCHANT_PAYABLES = r"""
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
PAYABLES = "each merchant's payable in the journal matches its payments"


async def check_merchant_payables(conn: asyncpg.Connection, scope: Scope) -> Check:
    """The journal's payable per merchant (and the platform's commission) equals the captures
    net of commission, less refunds net of the commission they return (floor(k * R / C)).
    Over a window, the same per payment of the window (their sums are the merchants')."""
    if not scope.whole_history:
        return await _payment_payables(conn, scope)
    found = await conn.fetch(_MERCHANT_PAYABLES)
    bad = [
        f"{r['account']}: the journal holds {r['journal']} but the payments' captures net of "
        f"commission and refunds come to {r['expected']}"
        for r in found
        if r["expected"] != r["journal"]
    ]
    return Check(PAYABLES, len(found), bad)


async def _payment_payables(conn: asyncpg.Connection, scope: Scope) -> Check:
    found = await conn.fetch(_PAYMENT_SHARES, scope.payments)
    bad = []
    for r in found:
        if r["journal_payable"] != r["owed"]:
            bad.append(f"payment {r['id']}: {r['account']} holds {r['journal_payable']} for it "
                       f"in the journal but its capture net of commission and refunds comes "
                       f"to {r['owed']}")
        if r["journal_commission"] != r["commission"]:
            bad.append(f"payment {r['id']}: platform_commission holds "
                       f"{r['journal_commission']} for it in the journal but its commission "
                       f"net of refunds comes to {r['commission']}")
    return Check(PAYABLES, len(found), bad)


async def check_no_orphan_charges(conn: asyncpg.Connection, scope: Scope) -> Check:
    """Money kept by payments must belong to a confirmed order (never a double charge)."""
    found = await conn.fetch(
        """
        SELECT p.id, p.order_id, p.captured - p.refunded AS kept, o.status
          FROM payments.payments p LEFT JOIN orders.orders o ON o.id = p.order_id
         WHERE p.captured - p.refunded > 0 AND (o.status IS NULL OR o.status <> 'CONFIRMED')
           AND coalesce(o.status, '') <> 'PENDING'
           AND ($1::uuid[] IS NULL OR p.id = ANY($1::uuid[]))
        """, scope.payments,
    )
    total = (await conn.fetchval("SELECT count(*) FROM payments.payments")
             if scope.payments is None else len(scope.payments))
    bad = [
        f"payment {r['id']} keeps {r['kept']} for order {r['order_id']} ({r['status']})"
        for r in found
    ]
    return Check("no money kept without a confirmed order", total, bad)


# Per SKU, the units its PENDING orders hold (the orders_pending partial index) and, over the
# whole history only, those its CONFIRMED orders sold: a sum over every order line, which a
# window cannot bound.
_SKU_LINES = """
    SELECT s.id, s.initial_stock, s.restocked, s.stock, s.held, s.sold,
           coalesce(l.pending, 0) AS pending, {confirmed} AS confirmed
      FROM orders.skus s
      LEFT JOIN (
        SELECT ol.sku_id, sum(ol.quantity) FILTER (WHERE o.status = 'PENDING') AS pending,
               {confirmed_sum} AS confirmed
          FROM orders.order_lines ol JOIN orders.orders o ON o.id = ol.order_id
         WHERE {orders} AND ($1::uuid[] IS NULL OR ol.sku_id = ANY($1::uuid[]))
         GROUP BY ol.sku_id
      ) l ON l.sku_id = s.id
     WHERE $1::uuid[] IS NULL OR s.id = ANY($1::uuid[])
    """
_SKUS_WHOLE = _SKU_LINES.format(
    confirmed="coalesce(l.confirmed, 0)", orders="true",
    confirmed_sum="sum(ol.quantity) FILTER (WHERE o.status = 'CONFIRMED')")
_SKUS_WINDOW = _SKU_LINES.format(confirmed="NULL::bigint", orders="o.status = 'PENDING'",
                                 confirmed_sum="NULL::bigint")


async def check_stock_conservation(conn: asyncpg.Connection, scope: Scope) -> Check:
    """initial + restocked = on hand + held + sold, and held/sold match the orders. Over a
    window, for the SKUs written in it: their counters and held units, in time that does not
    grow with the history (sold against every confirmed line is the full audit's)."""
    checked, bad = 0, []
    sql = _SKUS_WHOLE if scope.whole_history else _SKUS_WINDOW
    async for r in rows(conn, scope, "SKUs", sql, scope.skus):
        checked += 1
        if r["initial_stock"] + r["restocked"] != r["stock"] + r["held"] + r["sold"]:
            bad.append(
                f"sku {r['id']}: initial {r['initial_stock']} + restocked {r['restocked']}"
                f" != on hand {r['stock']} + held {r['held']} + sold {r['sold']}"
            )
        if r["confirmed"] is not None and r["sold"] != r["confirmed"]:
            bad.append(f"sku {r['id']}: sold {r['sold']} but its orders say "
                       f"{r['confirmed']} confirmed")
        if r["held"] != r["pending"]:
            bad.append(f"sku {r['id']}: held {r['held']} but its orders say "
                       f"{r['pending']} pending")
        if r["stock"] < 0:
            bad.append(f"sku {r['id']}: oversold, stock {r['stock']}")
    return Check(
        "stock is conserved (initial = on hand + held + sold), never oversold", checked, bad
    )


async def check_ledger_balanced(conn: asyncpg.Connection, scope: Scope) -> Check:
    """Double entry: every journal entry, and so the whole journal, sums to zero."""
    bad = []
    async for r in rows(conn, scope, "journal entries",
                        "SELECT entry_id, sum(amount) AS total FROM payments.journal_lines "
                        "WHERE $1::bigint[] IS NULL OR entry_id = ANY($1::bigint[]) "
                        "GROUP BY entry_id HAVING sum(amount) <> 0", scope.entries):
        bad.append(f"journal entry {r['entry_id']} sums to {r['total']}")
    if scope.entries is not None:
        return Check("the payments ledger balances (every entry sums to zero)",
                     len(scope.entries), bad)
    entries = await conn.fetchval("SELECT count(*) FROM payments.journal_entries")
    grand = await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM payments.journal_lines")
    if grand != 0:
        bad.append(f"the journal sums to {grand}, not 0")
    return Check("the payments ledger balances (every entry sums to zero)", entries, bad)


async def check_no_stuck_orders(conn: asyncpg.Connection, scope: Scope) -> Check:
    """PENDING orders are few (a partial index holds them): checked whole in either mode."""
    found = await conn.fetch(
        "SELECT id, payment_deadline FROM orders.orders "
        "WHERE status = 'PENDING' AND payment_deadline < now() - interval '1 minute'"
    )
    pending = await conn.fetchval("SELECT count(*) FROM orders.orders WHERE status = 'PENDING'")
    bad = [f"order {r['id']} still PENDING past its deadline {r['payment_deadline']}"
           for r in found]
    return Check("no order stays PENDING past its payment deadline", pending, bad)


GMV = "analytics GMV and refunds equal the confirmed and refunded orders"


async def check_gmv(conn: asyncpg.Connection, scope: Scope) -> Check:
    """Analytics GMV = sum of confirmed totals; refunds = what orders records refunded of
    them (all of a REFUNDED order, part of a partially refunded CONFIRMED one). Over a
    window: each confirmed or refunded order of it, as analytics holds it."""
    if not scope.whole_history:
        return await _orders_in_analytics(conn, scope)
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
    return Check(GMV, expected["orders"], bad, eventual=True)


async def _orders_in_analytics(conn: asyncpg.Connection, scope: Scope) -> Check:
    found = await conn.fetch(
        "SELECT o.id, o.total, o.refunded, f.total AS seen_total, f.refunded AS seen_refunded, "
        "       f.confirmed_at FROM orders.orders o "
        "  LEFT JOIN analytics.orders_fact f ON f.order_id = o.id "
        " WHERE o.id = ANY($1::uuid[]) AND o.status IN ('CONFIRMED', 'REFUNDED')",
        scope.orders)
    bad = [
        f"order {r['id']}: analytics counts {r['seen_total']} with {r['seen_refunded']} "
        f"refunded, orders {r['total']} with {r['refunded']} refunded"
        for r in found
        if r["confirmed_at"] is None or (r["seen_total"], r["seen_refunded"])
        != (r["total"], r["refunded"])
    ]
    return Check(GMV, len(found), bad, eventual=True)


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


async def run_audit(dsn: str, *, settle_s: float = 15.0, since: datetime | None = None,
                    progress: Report | None = None) -> list[Check]:
    """Run every check, over the whole history or (`since`) over what changed since then;
    eventual ones are retried for up to `settle_s` until they hold."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + settle_s
        while True:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                scope = (Scope.whole(progress=progress) if since is None else
                         await Scope.changed_since(conn, since, progress=progress))
                results = []
                for fn in CHECKS:
                    results.append(await fn(conn, scope))
                    scope.report(f"{results[-1].name}: {results[-1].checked:,} checked")
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


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_time(text: str) -> datetime:
    """`--since`: an RFC 3339 time, or an age back from now (`90m`, `1h`, `2d`)."""
    if text[:-1].isdigit() and text[-1:] in _UNITS:
        return datetime.now(UTC) - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time or an age: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    parser.add_argument(
        "--since", type=since_time, metavar="TIME",
        help="check only what changed since TIME (RFC 3339, or an age such as 90m, 1h, 2d)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ns = parser.parse_args(argv)
    dsn = ns.dsn or auditor_dsn()
    results = asyncio.run(run_audit(dsn, settle_s=ns.settle, since=ns.since,
                                    progress=None if ns.quiet else to_stderr))
    print(report(results, as_json=ns.json))
    return 0 if all(c.ok for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
