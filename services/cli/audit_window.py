"""What `marketplace audit` looks at: everything (streamed), or only what changed since a time.

`Scope.whole()` checks every row, reading each table through a server-side cursor so that
memory stays flat whatever the history. `Scope.since(conn, t)` first finds what changed
since `t` through indexes on the time each row was last written (WINDOW_QUERIES), widens
it to what those rows are checked against (an order's payment and the reverse, the members
of changed orders), and the checks read only those rows: time in proportion to the window.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

# Rows written at or after $1, each through an index on its last write (every write of these
# tables sets updated_at; the journal and the points ledger are append-only).
WINDOW_QUERIES = {
    "orders": "SELECT id, member_id FROM orders.orders WHERE updated_at >= $1",
    "payments": "SELECT id, order_id FROM payments.payments WHERE updated_at >= $1",
    "journal": "SELECT id, payment_id FROM payments.journal_entries WHERE created_at >= $1",
    "points": "SELECT DISTINCT member_id FROM membership.points_ledger WHERE created_at >= $1",
    "skus": "SELECT id FROM orders.skus WHERE updated_at >= $1",
}
# Both sides of order <-> payment, for the ids the window found on either side: each branch
# through its side's primary key and the other's index (one FULL JOIN with these conditions
# OR-ed read both tables whole: 40 s at 10 million orders).
PAIRS = (
    "SELECT o.id AS order_id, o.member_id, p.id AS payment_id FROM orders.orders o "
    "LEFT JOIN payments.payments p ON p.order_id = o.id WHERE o.id = ANY($1::uuid[]) "
    "UNION "
    "SELECT o.id, o.member_id, p.id FROM payments.payments p "
    "LEFT JOIN orders.orders o ON o.id = p.order_id WHERE p.id = ANY($2::uuid[])"
)
ENTRIES = "SELECT id FROM payments.journal_entries WHERE payment_id = ANY($1::uuid[])"
Report = Callable[[str], None]


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Scope:
    """None: every row. Otherwise the ids of what each check reads."""

    since: datetime | None = None
    orders: list[uuid.UUID] | None = None
    payments: list[uuid.UUID] | None = None
    entries: list[int] | None = None
    members: list[uuid.UUID] | None = None
    skus: list[uuid.UUID] | None = None
    progress: Report | None = None
    _started: float = field(default_factory=time.monotonic)

    @classmethod
    def whole(cls, *, progress: Report | None = None) -> Scope:
        return cls(progress=progress)

    @classmethod
    async def changed_since(cls, conn: asyncpg.Connection, since: datetime, *,
                            progress: Report | None = None) -> Scope:
        """What changed at or after `since`, and what it is checked against."""
        found = {name: await conn.fetch(sql, since) for name, sql in WINDOW_QUERIES.items()}
        orders = {r["id"] for r in found["orders"]}
        payments = {r["id"] for r in found["payments"]}
        payments |= {r["payment_id"] for r in found["journal"]}
        members = {r["member_id"] for r in found["orders"]}
        members |= {r["member_id"] for r in found["points"]}
        for r in await conn.fetch(PAIRS, list(orders), list(payments)):
            if r["order_id"] is not None:
                orders.add(r["order_id"])
                members.add(r["member_id"])
            if r["payment_id"] is not None:
                payments.add(r["payment_id"])
        entries = await conn.fetch(ENTRIES, list(payments))
        scope = cls(since=since, orders=sorted(orders), payments=sorted(payments),
                    entries=sorted(r["id"] for r in entries), members=sorted(members),
                    skus=sorted(r["id"] for r in found["skus"]), progress=progress)
        scope.report(f"window since {since.isoformat()}: {len(orders)} orders, "
                     f"{len(payments)} payments, {len(members)} members, "
                     f"{len(scope.skus or [])} SKUs")
        return scope

    @property
    def whole_history(self) -> bool:
        return self.since is None

    def report(self, line: str) -> None:
        if self.progress is not None:
            self.progress(f"audit [{time.monotonic() - self._started:7.1f} s] {line}")

    def counted(self, what: str, n: int, every: int = 100_000) -> None:
        """Progress every `every` rows of a long read."""
        if n % every == 0:
            self.report(f"{what}: {n:,} rows read")
