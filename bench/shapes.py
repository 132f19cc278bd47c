"""`python -m bench --shapes single,topology`: the open-loop checkout steps against the
single-process stack and then the production topology (2 replicas of each service behind
HAProxy, a 3-node NATS cluster with R3 streams, PgBouncer), one shape after the other with
the same rates, members and step length; then what limits one Postgres primary (pgbench on
one checkout's transaction) and one JetStream stream leader (acked publishes, R1 and R3),
each beside what the stack asked of it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import ceilings, cpu, generator, nats_sync, output, pools, runs
from bench.nats_sync import Publishing
from bench.output import Row
from bench.runs import Measured
from bench.stack import Target, code_at, ensure_stack

SHAPES: dict[str, tuple[str, ...]] = {
    "single": (),
    "topology": ("--replicas", "2", "--nats-cluster", "--pooler"),
    # One part of the topology at a time, to put a number on each.
    "replicas": ("--replicas", "2"),
    "pooler": ("--pooler",),
    "r3": ("--nats-cluster",),
}
PUBLISHES = 2000  # per measurement of the stream leader's ceiling


@dataclass(frozen=True)
class PrimaryCeiling:
    """pgbench on one checkout's first transaction, and Postgres's CPU per transaction."""

    tps: float
    postgres_ms_per_tx: float


def parse(text: str) -> list[str]:
    """Shape names, each optionally `@<commit>`: that shape running that commit's code
    (`single@HEAD~5,single` measures an earlier commit beside this checkout, in one run)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n.partition("@")[0] not in SHAPES]
    if unknown or not names:
        raise SystemExit(f"--shapes takes {', '.join(SHAPES)}, each optionally @<commit>; "
                         f"not {', '.join(unknown) or text}")
    return names


async def _checkout(args: argparse.Namespace, target: Target, shape: str) -> list[Measured]:
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    cat = await pools.catalog(target.url("orders"))
    # Signed in at a membership process itself, not through HAProxy: behind the balancer
    # every sign-in comes from its address, and the per-client limit (100 per 5 minutes)
    # would refuse the run's own shoppers. Setting up, not measured.
    membership = target.replica_urls("membership")[0]
    shoppers = await pools.sign_in(membership, args.members, prefix="bench")
    print(f"{shape}: {len(shoppers)} members signed in; {len(cat.skus)} SKUs to buy; "
          f"{args.step_s:.0f} s per rate")
    async with generator.session() as client:
        send = runs.checkout_sender(client, target.url("orders"), shoppers, cat)
        print(f"warming up: {args.warmup_s:.0f} s at {rates[0]:.0f}/s", flush=True)
        await generator.run_step(send, rate=rates[0], duration_s=args.warmup_s)
        measured = await runs.stack_steps(target, send, rates, step_s=args.step_s,
                                          profile_to=None)
    for m in measured:
        m.row.shape = shape
    return measured


async def _primary(target: Target, seconds: int) -> PrimaryCeiling:
    """pgbench with the checkout's SQL on the stack's Postgres server, its CPU counted."""
    dsn = await ceilings.prepare_db(target.admin_dsn)
    try:
        before = cpu.snapshot(target)
        pg = await asyncio.to_thread(ceilings.run_pgbench, dsn, seconds=seconds)
        spent = cpu.snapshot(target).seconds["postgres"] - before.seconds["postgres"]
    finally:
        await ceilings.drop_db(target.admin_dsn)
    return PrimaryCeiling(pg.tps, 1000.0 * spent / (pg.tps * seconds))


def run(args: argparse.Namespace, names: Sequence[str], base: Path, *,
        header: str) -> list[Row]:
    """Every shape in turn (each started and stopped here), then the ceilings."""
    measured: dict[str, list[Measured]] = {}
    primary: PrimaryCeiling | None = None
    for n, shape in enumerate(names):
        base_shape, _, ref = shape.partition("@")
        with ensure_stack(args.port_base, log_name=f"bench-{base_shape}",
                          up_args=SHAPES[base_shape],
                          code=code_at(ref) if ref else None) as target:
            measured[shape] = asyncio.run(_checkout(args, target, shape))
            if n == len(names) - 1 and not args.no_ceilings:
                print(f"\npgbench on the {shape} stack's Postgres ({args.pgbench_s} s):")
                primary = asyncio.run(_primary(target, args.pgbench_s))
    leaders: dict[str, Publishing] = {}
    if not args.no_ceilings:
        print("\none stream leader, scratch servers (sync_interval always):", flush=True)
        leaders = {"R1": nats_sync.run("always", PUBLISHES), "R3": nats_sync.run_cluster(PUBLISHES)}
    report = side_by_side(measured) + "\n\n" + limits(measured, primary, leaders)
    print("\n" + report)
    rows = [m.row for steps in measured.values() for m in steps]
    if primary is not None:
        rows.append(Row("pgbench", math.nan, shape=names[-1], confirmed_per_s=primary.tps,
                        achieved_per_s=primary.tps))
    for label, found in leaders.items():
        rows.append(Row(f"nats-{label}", math.nan, confirmed_per_s=found.ceiling,
                        achieved_per_s=found.ceiling))
    output.write_csv(rows, base.with_suffix(".csv"))
    base.with_suffix(".md").write_text(f"{header}\n\n{report}\n")
    return rows


def ratio(topology: float, single: float) -> float:
    return topology / single if single and not math.isnan(single) else math.nan


def _step_line(m: Measured) -> list[str]:
    r = m.row
    parts = ", ".join(f"{k} {v:.1f}" for k, v in m.cpu_ms.items()
                      if k not in ("total", "generator") and v >= 0.05)
    return [r.shape, f"{r.rate_offered:.0f}", f"{r.confirmed_per_s:.1f}", f"{r.p50_ms:.0f}",
            f"{r.p99_ms:.0f}", f"{r.shed_rate:.1%}", f"{r.cpu_ms_per_order:.1f}", parts,
            f"{r.statements_per_order:.1f}", f"{r.publishes_per_order:.2f}"]


def side_by_side(measured: dict[str, list[Measured]]) -> str:
    """One markdown table: each step of each shape, then each shape ÷ single per rate."""
    head = ["shape", "offered/s", "confirmed/s", "p50 ms", "p99 ms", "shed",
            "CPU ms/order", "of which", "statements/order", "publishes/order"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for steps in measured.values():
        lines += ["| " + " | ".join(_step_line(m)) + " |" for m in steps]
    single = measured.get("single") or []
    for shape, steps in measured.items():
        if shape == "single":
            continue
        for s, t in zip(single, steps, strict=False):
            cells = [f"{shape} ÷ single", f"{s.row.rate_offered:.0f}",
                     f"{ratio(t.row.confirmed_per_s, s.row.confirmed_per_s):.2f}",
                     f"{ratio(t.row.p50_ms, s.row.p50_ms):.2f}",
                     f"{ratio(t.row.p99_ms, s.row.p99_ms):.2f}", "",
                     f"{ratio(t.row.cpu_ms_per_order, s.row.cpu_ms_per_order):.2f}",
                     f"{t.row.cpu_ms_per_order - s.row.cpu_ms_per_order:+.1f} ms", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _busiest(steps: list[Measured]) -> Measured:
    return max(steps, key=lambda m: m.row.confirmed_per_s)


def limits(measured: dict[str, list[Measured]], primary: PrimaryCeiling | None,
           leaders: dict[str, Publishing]) -> str:
    """What one primary and one stream leader took at each shape's busiest step, beside
    their ceilings measured in this run."""
    out = []
    if primary is not None:
        out.append(f"- one Postgres primary: pgbench (one checkout's first transaction, "
                   f"8 clients) {primary.tps:.0f} tx/s, Postgres CPU "
                   f"{primary.postgres_ms_per_tx:.2f} ms per transaction")
    for label, found in leaders.items():
        out.append(f"- one stream leader, {label}, sync always: {found.sequential:.0f}/s one "
                   f"at a time, {found.concurrent:.0f}/s with {nats_sync.CONCURRENCY} in "
                   f"flight, {found.saturating:.0f}/s with {nats_sync.SATURATING}")
    for shape, steps in measured.items():
        m = _busiest(steps)
        rate = m.row.confirmed_per_s
        streams = ", ".join(f"{k} {v * rate:.0f}/s" for k, v in m.publishes.items())
        pg_ms = m.cpu_ms.get("postgres", math.nan)
        out.append(f"- {shape} at {rate:.0f} confirmed/s: {m.row.statements_per_order * rate:.0f} "
                   f"statements/s, Postgres {pg_ms:.1f} ms CPU/order; publishes {streams}; "
                   f"NATS {m.cpu_ms.get('nats', math.nan):.1f} ms CPU/order")
    return "\n".join(out)
