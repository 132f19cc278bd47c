"""`make load`: the peak day in Locust against the real stack, then `marketplace audit`.

Starts the stack if it is not running (and stops it again), signs a pool of members in,
runs tests/load/locustfile.py headless with its PeakDayShape, polls analytics' GMV while
it runs, audits, and writes bench/results/load-<time>/ (Locust CSVs and HTML, report.html
with charts, gmv.csv, audit.txt). Exit status: non-zero when the audit finds anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench import load_report, pools
from bench.stack import Target, ensure_stack
from services.cli.stack import repo_root

RESULTS = Path(__file__).with_name("results")
LOCUSTFILE = repo_root() / "tests" / "load" / "locustfile.py"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    env = os.environ.get
    p.add_argument("--day-s", type=float, default=float(env("LOAD_DAY_S", 180)),
                   help="the compressed day, seconds (LOAD_DAY_S)")
    p.add_argument("--users", type=int, default=int(env("LOAD_USERS", 10)),
                   help="users on a calm evening; midnight has ten times as many (LOAD_USERS)")
    p.add_argument("--peak-factor", type=float, default=float(env("LOAD_PEAK_FACTOR", 10)))
    p.add_argument("--members", type=int, default=int(env("LOAD_MEMBERS", 80)))
    p.add_argument("--port-base", type=int, default=int(env("PORT_BASE", 8000)))
    return p


async def _prepare(target: Target, out: Path, members: int) -> Path:
    cat = await pools.catalog(target.url("orders"), min_stock=5)
    shoppers = await pools.sign_in(target.url("membership"), members, prefix="load")
    fixture = out / "fixture.json"
    fixture.write_text(json.dumps(asdict(cat) | {"members": [
        {"email": s.email, "token": s.token} for s in shoppers]}))
    os.chmod(fixture, 0o600)  # bearer tokens
    print(f"{len(shoppers)} members signed in; {len(cat.skus)} SKUs, "
          f"{len(cat.hot_skus)} hot SKUs on {len(cat.hot_products)} hot products")
    return fixture


async def _gmv_poll(target: Target, since: datetime, done: asyncio.Event,
                    samples: list[dict[str, float]]) -> None:
    """GMV and confirmed orders since the start, every 2 s until `done`, once more after."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5.0, headers={"X-Admin-Key": target.admin_key}) as c:
        while True:
            finished = done.is_set()
            to = datetime.now(UTC) + timedelta(seconds=1)
            try:
                answer = await c.get(f"{target.url('analytics')}/v1/analytics/gmv",
                                     params={"from": since.isoformat(), "to": to.isoformat()})
                if answer.status_code == 200:
                    body = answer.json()
                    samples.append({"t": time.monotonic() - started,
                                    "gmv_fen": body["gmv"]["amount"],
                                    "orders": body["orders"]})
            except httpx.HTTPError:
                pass  # a missed sample is a gap in the chart, not a failed run
            if finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 2.0)


async def _locust(args: argparse.Namespace, target: Target, out: Path, fixture: Path) -> int:
    env = dict(os.environ) | {
        "LOAD_FIXTURE": str(fixture), "LOAD_USERS": str(args.users),
        "LOAD_PEAK_FACTOR": str(args.peak_factor), "LOAD_DAY_S": str(args.day_s),
        "PYTHONPATH": str(repo_root()),
    }
    cmd = [str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE), "--headless",
           "--host", target.url("orders"), "--csv", str(out / "locust"), "--csv-full-history",
           "--html", str(out / "locust.html"), "--stop-timeout", "10", "--only-summary",
           "--loglevel", "WARNING"]
    samples: list[dict[str, float]] = []
    done = asyncio.Event()
    since = datetime.now(UTC) - timedelta(seconds=5)
    poller = asyncio.create_task(_gmv_poll(target, since, done, samples))
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=repo_root())
    try:  # the shape ends the run; this bounds it should Locust hang
        code = await asyncio.wait_for(proc.wait(), args.day_s + 120)
    except TimeoutError:
        proc.kill()
        code = await proc.wait()
    await asyncio.sleep(3)  # the last confirmations reach analytics
    done.set()
    await poller
    with (out / "gmv.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["t", "gmv_fen", "orders"])
        writer.writeheader()
        writer.writerows(samples)
    return code


def _audit(out: Path) -> int:
    done = subprocess.run([str(Path(sys.executable).with_name("marketplace")), "audit",
                           "--settle", "60"], capture_output=True, text=True, check=False,
                          cwd=repo_root())
    (out / "audit.txt").write_text(done.stdout + done.stderr)
    print(done.stdout + done.stderr)
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = RESULTS / f"load-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    print(f"peak day: {args.users} users, x{args.peak_factor:g} at midnight, "
          f"{args.day_s:.0f} s; results in {out}")
    with ensure_stack(args.port_base, log_name="load-up") as target:
        fixture = asyncio.run(_prepare(target, out, args.members))
        locust_code = asyncio.run(_locust(args, target, out, fixture))
        fixture.unlink()
        audit_code = _audit(out)
    summary = load_report.write(out, audit_ok=audit_code == 0, locust_code=locust_code)
    print(summary)
    if locust_code not in (0, 1):  # 1: some requests failed, which the report shows
        print(f"locust exited with {locust_code}", file=sys.stderr)
        return locust_code
    return 0 if audit_code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
