"""`marketplace analytics rebuild`: replay every stream into fresh projections and swap them in.

Connection settings come from the flags, else the environment the analytics service reads
(ANALYTICS_DATABASE_SESSION_URL, else ANALYTICS_DATABASE_URL; ANALYTICS_NATS_URL;
MARKETPLACE_ADMIN_DSN for the one-off creation of the shadow schema), else the local stack
in .data/ (`make run`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from services.analytics.rebuild import RebuildError, Rebuilt, rebuild
from services.common.bus import Bus


def _local_defaults() -> dict[str, str]:
    """DSNs and the NATS URL of the local stack, if one is recorded."""
    from services.cli.launcher import service_nats_url
    from services.cli.secrets import load_or_create_secrets
    from services.cli.stack import DataPaths, read_state

    paths = DataPaths.default()
    state = read_state(paths)
    dsns = state.get("dsns") or {}
    found: dict[str, str] = {}
    if "analytics" in dsns:
        found["database_url"] = dsns["analytics"]
    if state.get("admin_dsn"):
        found["admin_dsn"] = state["admin_dsn"]
    if state.get("nats_url") and paths.secrets_file.exists():
        secrets = load_or_create_secrets(paths.secrets_file)
        found["nats_url"] = service_nats_url("analytics", state["nats_url"], secrets)
    return found


def parse(argv: list[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="marketplace analytics rebuild",
        description="Drop and rebuild every analytics projection from the streams, then swap "
                    "it in; the live service keeps running.",
    )
    # A session of its own (SET search_path, one long replay): the direct DSN, not a pooler's.
    default_dsn = env.get("ANALYTICS_DATABASE_SESSION_URL") or env.get("ANALYTICS_DATABASE_URL")
    parser.add_argument("--database-url", default=default_dsn,
                        help="the analytics role's direct DSN (default: "
                             "$ANALYTICS_DATABASE_SESSION_URL, else $ANALYTICS_DATABASE_URL)")
    parser.add_argument("--nats-url", default=env.get("ANALYTICS_NATS_URL"),
                        help="default: $ANALYTICS_NATS_URL")
    parser.add_argument("--admin-dsn", default=env.get("MARKETPLACE_ADMIN_DSN"),
                        help="only needed once, to create the analytics_rebuild schema")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.database_url is None or args.nats_url is None:
        local = _local_defaults()
        args.database_url = args.database_url or local.get("database_url")
        args.nats_url = args.nats_url or local.get("nats_url")
        args.admin_dsn = args.admin_dsn or local.get("admin_dsn")
    if not args.database_url or not args.nats_url:
        parser.error("no analytics database or NATS URL: pass --database-url and --nats-url, "
                     "set ANALYTICS_DATABASE_URL/ANALYTICS_NATS_URL, or start the local stack")
    return args


class ProgressLine:
    """`rebuild [  12.0 s] ORDERS 150,000/1,000,000 PAYMENTS 90,000/400,000 ...: 20,000
    events/s` on stderr every few seconds and when a stream is done (a line each, readable
    in a log too)."""

    def __init__(self, out: TextIO, *, every_s: float = 5.0) -> None:
        self.out, self.every_s = out, every_s
        self.started = self.last = time.monotonic()
        self.streams: dict[str, tuple[int, int]] = {}

    def __call__(self, stream: str, done: int, total: int) -> None:
        self.streams[stream] = (done, total)
        now = time.monotonic()
        if now - self.last < self.every_s and (done < total or done == 0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        streams = " ".join(f"{name} {d:,}/{t:,}" for name, (d, t) in self.streams.items())
        replayed = sum(d for d, _ in self.streams.values())
        self.out.write(f"rebuild [{elapsed:7.1f} s] {streams}: "
                       f"{replayed / elapsed:,.0f} events/s\n")
        self.out.flush()


async def run(args: argparse.Namespace) -> Rebuilt:
    bus = await Bus.connect(args.nats_url, name="analytics-rebuild")
    try:
        return await rebuild(
            args.database_url, bus.js, admin_dsn=args.admin_dsn,
            progress=(lambda *_: None) if args.no_progress else ProgressLine(sys.stderr),
        )
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv, os.environ)
    started = time.monotonic()
    try:
        done = asyncio.run(run(args))
    except RebuildError as exc:
        print(f"rebuild failed: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    counts = ", ".join(f"{stream} {n:,}" for stream, n in done.replayed.items())
    print(f"analytics projections rebuilt and swapped in ({counts} events replayed) in "
          f"{took:.1f} s, {sum(done.replayed.values()) / max(took, 1e-6):,.0f} events/s; "
          f"the live consumers waited {1000 * done.held_s:.0f} ms "
          f"({done.under_lock:,} events applied meanwhile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
