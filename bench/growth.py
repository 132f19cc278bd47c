"""`make bench-growth`: every hot path's cost as the history grows.

Loads history (`marketplace history`) in steps, 0, 1, 3 and 10 million orders by default,
into the running stack (or one it starts), and at each step measures, in the same run:
checkout capacity, p99 and CPU per order, `GET /v1/orders` and the order view for a member
with 1,000 orders, the dashboard's queries, recovery's scan, the purge's cost per deleted
row, `audit --since 1h` and the full audit's time and peak memory, and the database's size.
Results: bench/results/growth-<time>.{csv,png}, one row per history size.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import generator, growth_probes, output, pools, runs
from bench.__main__ import RESULTS, machine
from bench.stack import Target, ensure_stack
from services.cli import history, history_members
from services.cli.history_model import HEAVY_MEMBER_ORDERS, Plan
from services.cli.stack import read_state

HEAVY_SEED = 1  # the run that makes the member with 1,000 orders (history_members)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    p.add_argument("--steps", default="0,1000000,3000000,10000000",
                   help="orders in history at each measurement, ascending, comma-separated")
    p.add_argument("--rates", default="50,100,150",
                   help="offered checkouts/s at each step; capacity is the most confirmed, "
                   "p99 is the first rate's")
    p.add_argument("--step-s", type=float, default=15.0, help="seconds per measured rate")
    p.add_argument("--read-rate", type=float, default=40.0,
                   help="order list and order view requests/s")
    p.add_argument("--members", type=int, default=60, help="shoppers for the checkouts")
    p.add_argument("--days", type=float, default=365.0, help="how far back history reaches")
    p.add_argument("--loaded", type=int, default=0,
                   help="orders the running stack's history holds already (an earlier run's "
                   "steps): `--loaded 10000000 --steps 10000000` measures it again as it is")
    p.add_argument("--port-base", type=int, default=8000)
    return p


def _steps(text: str) -> list[int]:
    steps = [int(x) for x in text.split(",") if x.strip()]
    if steps != sorted(steps) or not steps or steps[0] < 0:
        raise SystemExit(f"--steps must be ascending and non-negative, got {text}")
    return steps


async def _load(target: Target, orders: int, *, seed: int, days: float,
                members: int | None = None) -> float:
    """Add `orders` to the history, ending an hour ago (outside `audit --since 1h`)."""
    if orders <= 0:
        return 0.0
    until = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    plan = Plan(orders=orders, members=members or max(1, orders // 20), seed=seed,
                start=until - timedelta(days=days), until=until)
    done = await history.load(target.admin_dsn, plan)
    print(f"  history +{orders:,} orders in {done.seconds:.0f} s "
          f"({orders / max(done.seconds, 1e-9):,.0f} orders/s)", flush=True)
    return done.seconds


async def _checkout(target: Target, send: generator.Send, rates: list[float],
                    step_s: float) -> dict[str, float]:
    measured = await runs.stack_steps(target, send, rates, step_s=step_s, profile_to=None)
    first = measured[0].row
    return {
        "checkout_capacity_per_s": max(m.row.confirmed_per_s for m in measured),
        "checkout_p99_ms": first.p99_ms,
        "cpu_ms_per_order": first.cpu_ms_per_order,
    }


async def _measure(target: Target, send: generator.Send, token: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    dsns = read_state(target.data)["dsns"]
    figures: dict[str, Any] = await _checkout(
        target, send, [float(r) for r in args.rates.split(",")], args.step_s)
    lists, views = await growth_probes.member_reads(
        target.url("orders"), token, rate=args.read_rate, seconds=args.step_s / 2)
    figures["order_list_p99_ms"] = lists.summary.p99_ms
    figures["order_view_p99_ms"] = views.summary.p99_ms
    figures["dashboard_ms"] = await growth_probes.dashboard_ms(dsns["analytics"])
    figures["recovery_scan_ms"] = await growth_probes.recovery_scan_ms(dsns["orders"])
    # Rows published more than an hour ago: the history's (newer ones are the run's own).
    per_row, deleted = await growth_probes.purge_us_per_row(dsns["orders"],
                                                            keep=timedelta(hours=1))
    figures["purge_us_per_row"], figures["purged_rows"] = per_row, deleted
    auditor = dsns["auditor"]
    # The window holds the run's own checkouts, more at each step: its size goes beside it.
    window = await growth_probes.window_orders(auditor, timedelta(hours=1))
    since_s, _, since_clean = await asyncio.to_thread(growth_probes.audit, auditor,
                                                      "--since", "1h")
    full_s, full_mib, full_clean = await asyncio.to_thread(growth_probes.audit, auditor)
    figures |= {"audit_since_1h_s": since_s, "audit_since_1h_orders": window,
                "audit_since_ms_per_order": 1000 * since_s / max(window, 1),
                "audit_full_s": full_s,
                "audit_full_peak_mib": full_mib, "audits_clean": since_clean and full_clean,
                "database_mib": await growth_probes.database_mib(target.admin_dsn)}
    return figures


async def _heavy_token(target: Target) -> str:
    return await growth_probes.sign_in(target.url("membership"),
                                       history_members.email(HEAVY_SEED, 0),
                                       history_members.PASSWORD)


async def _run(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    steps = _steps(args.steps)
    try:  # a stack an earlier run filled (with --loaded)
        await _heavy_token(target)
        print("history: the member with 1,000 orders is there already", flush=True)
    except RuntimeError:
        print("history: the member with 1,000 orders", flush=True)
        await _load(target, HEAVY_MEMBER_ORDERS, seed=HEAVY_SEED, days=args.days,
                    members=1)
    cat = await pools.catalog(target.url("orders"))
    records, loaded = [], args.loaded
    if steps[0] < loaded:
        raise SystemExit(f"--steps start below --loaded ({loaded:,})")
    async with generator.session() as client:
        for n, orders in enumerate(steps):
            print(f"\n{orders:,} orders in history", flush=True)
            # Each step's orders have a seed of their own, also across runs into one stack.
            load_s = await _load(target, orders - loaded, seed=HEAVY_SEED + orders,
                                 days=args.days)
            loaded = orders
            # Signed in afresh at each step: a step outlasts an access token.
            token = await _heavy_token(target)
            shoppers = await pools.sign_in(target.url("membership"), args.members,
                                           prefix="growth")
            send = runs.checkout_sender(client, target.url("orders"), shoppers, cat)
            if n == 0:  # the services' first requests, not measured
                await generator.run_step(send, rate=float(args.rates.split(",")[0]),
                                         duration_s=5.0)
            figures = await _measure(target, send, token, args)
            records.append({"orders_in_history": orders, **figures, "load_s": load_s})
            print(output.records_table(records[-1:]), flush=True)
    return records


def chart(records: list[dict[str, Any]], path: Any, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [k for k in records[0] if k not in ("orders_in_history", "audits_clean",
                                                   "purged_rows", "load_s")]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(figures) / cols), cols, figsize=(16, 9),
                             squeeze=False)
    x = [r["orders_in_history"] for r in records]
    for ax, key in zip(axes.flat, figures, strict=False):
        ax.plot(x, [r[key] for r in records], marker="o")
        ax.axhline(1.2 * records[0][key], color="red", linestyle=":", linewidth=1)
        ax.set(title=key, xscale="symlog", xlabel="orders in history")
        ax.set_xlim(left=0)
    for ax in list(axes.flat)[len(figures):]:
        ax.axis("off")
    fig.suptitle(f"{title}\n(red: 1.2 x the figure at the first step)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    with ensure_stack(args.port_base, log_name="bench-growth-up") as target:
        records = asyncio.run(_run(args, target))
    base = RESULTS / f"growth-{stamp}"
    output.write_records(records, base.with_suffix(".csv"))
    chart(records, base.with_suffix(".png"), title=f"marketplace growth {stamp} - {machine()}")
    print("\n" + output.records_table(records))
    print(f"\nresults: {base}.csv, {base}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
