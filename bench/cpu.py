"""CPU time per component during a step: where one checkout's milliseconds of CPU go.

Latency on a shared 2-core machine is noisy; CPU seconds spent per confirmed order are
much steadier, and they say which process to make cheaper. Components: the four services
(every replica, with its children), Postgres (the postmaster and every backend), NATS (the
server, or every node of a cluster), HAProxy and PgBouncer when the topology runs them, and
the load generator itself. The pids come from what `marketplace up` recorded in stack.json,
never from a search by process name over the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil

from bench.stack import Target
from services.cli.stack import read_state

SERVICES = ("orders", "payments", "membership", "analytics")
INFRA = ("postgres", "nats", "haproxy", "pgbouncer")


def _tree_cpu(pid: int | None) -> float:
    """User + system CPU seconds of `pid`, its live children and the children it has reaped
    (0 when it is gone).

    Counting the reaped ones matters for Postgres: a backend that exits during a step (a
    pool closing an idle connection, an autovacuum worker) takes its CPU out of the live
    sum, and the step's Postgres figure once came out negative; the postmaster reaps it,
    and its CPU then shows in the postmaster's children times."""
    if not pid:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        reaped = root.cpu_times()
    except psutil.Error:
        return 0.0
    total = reaped.children_user + reaped.children_system
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def process_seconds(pid: int) -> float:
    """CPU seconds of one process started outside the stack (a ceiling's server)."""
    return _tree_cpu(pid)


@dataclass(frozen=True)
class Snapshot:
    seconds: dict[str, float]


def _pid(entry: object) -> list[int]:
    pid = entry.get("pid") if isinstance(entry, Mapping) else None
    return [int(pid)] if pid else []


def component_pids(state: Mapping[str, Any]) -> dict[str, list[int]]:
    """The processes of each component, from stack.json as `marketplace up` wrote it.

    Replicas are recorded by label (`orders-1`, `orders-2`) and count towards their service;
    a NATS cluster records its nodes, a single server its own pid."""
    pids: dict[str, list[int]] = {name: [] for name in (*SERVICES, *INFRA)}
    for label, pid in (state.get("services") or {}).items():
        name = label.rsplit("-", 1)[0] if label not in SERVICES else label
        if name in SERVICES and pid:
            pids[name].append(int(pid))
    pids["postgres"] = _pid(state.get("postgres"))
    nats = state.get("nats") or {}
    pids["nats"] = [p for node in nats.get("nodes") or [nats] for p in _pid(node)]
    topology = state.get("topology") or {}
    pids["haproxy"] = _pid(topology.get("balancer"))
    pids["pgbouncer"] = _pid(topology.get("pgbouncer"))
    return pids


def snapshot(target: Target) -> Snapshot:
    """CPU seconds so far per component, exited Postgres backends included."""
    pids = component_pids(read_state(target.data))
    seconds = {name: sum(_tree_cpu(pid) for pid in group) for name, group in pids.items()}
    seconds["generator"] = _tree_cpu(os.getpid())
    return Snapshot(seconds)


def per_order_ms(before: Snapshot, after: Snapshot, confirmed: int) -> dict[str, float]:
    """CPU milliseconds per confirmed order, per component and in `total`."""
    if confirmed <= 0:
        return {}
    out = {k: 1000.0 * (after.seconds.get(k, 0.0) - v) / confirmed
           for k, v in before.seconds.items()}
    out["total"] = sum(v for k, v in out.items() if k != "generator")
    return out


def describe(ms: dict[str, float]) -> str:
    if not ms:
        return "cpu/order: n/a"
    # HAProxy and PgBouncer only when the shape runs them (a zero is no process at all).
    parts = [f"{k} {ms[k]:.1f}" for k in (*SERVICES, *INFRA)
             if k in ms and (ms[k] or k not in ("haproxy", "pgbouncer"))]
    return f"cpu ms/order: total {ms['total']:.1f} = " + ", ".join(parts)


class StatementCounter:
    """Statements and commits per confirmed order, per service role, from Postgres itself.

    Counts do not depend on how busy the machine is. Needs pg_stat_statements loaded
    (the embedded server preloads it); elsewhere the counts are simply not reported.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.available = True

    async def _query(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    async def reset(self) -> None:
        if not self.available:
            return
        try:
            await self._query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await self._query("SELECT pg_stat_statements_reset()")
        except asyncpg.PostgresError:
            self.available = False

    async def per_order(self, confirmed: int) -> dict[str, float]:
        """{role: statements per order} plus `commits` and `plans` (all roles); {} when
        unavailable. Plans are counted where the server tracks planning (the embedded one
        does): a statement planned on every call shows up there, not in the call count."""
        if not self.available or confirmed <= 0:
            return {}
        roles = ", ".join(f"'{name}'" for name in SERVICES)  # the service roles' names
        rows = await self._query(
            "SELECT r.rolname AS role, sum(s.calls)::bigint AS calls, "
            "sum(s.calls) FILTER (WHERE s.query ILIKE 'commit%')::bigint AS commits, "
            "sum(s.plans)::bigint AS plans "
            "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
            f"WHERE r.rolname IN ({roles}) GROUP BY r.rolname")
        out = {r["role"]: r["calls"] / confirmed for r in rows}
        out["commits"] = sum((r["commits"] or 0) for r in rows) / confirmed
        out["plans"] = sum((r["plans"] or 0) for r in rows) / confirmed
        return out


def describe_statements(counts: dict[str, float]) -> str:
    if not counts:
        return "statements/order: n/a (pg_stat_statements not loaded)"
    parts = [f"{k} {counts[k]:.1f}" for k in SERVICES if k in counts]
    total = sum(counts.get(k, 0.0) for k in SERVICES)
    return (f"statements/order: total {total:.1f} = " + ", ".join(parts)
            + f"; explicit COMMITs {counts['commits']:.1f}, plans {counts['plans']:.1f}")
