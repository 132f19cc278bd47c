"""`marketplace outbox republish --since TIME`: send again what a broker may have lost.

Marks each service's outbox rows published since TIME as pending; the running relays
publish them again with their original `Nats-Msg-Id`, so JetStream drops any it still
has (inside its duplicate window) and the consumers' inboxes skip the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import asyncpg

from services.cli.dbsetup import SERVICES
from services.cli.procs import StackError
from services.common.outbox import republish_since

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """An RFC 3339 time (UTC if no offset) or a span back from now: 90s, 15m, 2h, 1d."""
    if match := _RELATIVE.match(text.strip()):
        span = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return (now or datetime.now(UTC)) - span
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise StackError(f"--since {text!r}: give an RFC 3339 time or e.g. 15m, 2h") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def republish(dsns: Mapping[str, str], since: datetime) -> dict[str, int]:
    """Rows marked pending again, by service (analytics has no outbox events)."""
    counts = {}
    for service, dsn in dsns.items():
        conn = await asyncpg.connect(dsn, server_settings={"search_path": service})
        try:
            counts[service] = await republish_since(conn, since)
        finally:
            await conn.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketplace outbox", description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", action="append", default=[], metavar="SERVICE=URL",
                        help="a service's Postgres URL (default: the local stack's)")  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    again = sub.add_parser("republish", help="publish again the events sent since a time")
    again.add_argument("--since", required=True, help="RFC 3339 time, or 90s / 15m / 2h / 1d")
    ns = parser.parse_args(argv)
    try:
        since = parse_since(ns.since)
        dsns = dict(item.split("=", 1) for item in ns.dsn)
        if not dsns:
            from services.cli.stack import local_dsns

            recorded = local_dsns()
            dsns = {name: recorded[name] for name in SERVICES}
        counts = asyncio.run(republish(dsns, since))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for service, count in counts.items():
        print(f"  {service:<11} {count} event(s) pending again")
    print(f"published again since {since.isoformat()} by each service's relay")
    return 0


if __name__ == "__main__":
    sys.exit(main())
