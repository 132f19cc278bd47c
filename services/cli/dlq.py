"""`marketplace dlq list|retry`: events that kept failing, across the services' schemas.

`retry SERVICE:ID` republishes the stored payload and headers to JetStream with a fresh
`Nats-Msg-Id` (the original is still inside the duplicate window) but the same `ce-id`,
and, in the same transaction, deletes the inbox row written at dead-lettering (else the
consumer would skip the retry as a duplicate) and marks the row `retried_at`. The publish
is awaited before the commit: a failed publish leaves the dead letter as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from services.cli.dbsetup import SERVICES
from services.cli.procs import StackError
from services.common.bus import Bus

LIST_SQL = """
SELECT id, consumer, event_id, subject, deliveries, failed_at, retried_at, error
  FROM dead_letter {where} ORDER BY failed_at, id
"""


def stack_targets(argv_dsns: list[str], nats_url: str | None) -> tuple[dict[str, str], str]:
    """Each service's DSN and the NATS URL: from --dsn/--nats-url, else the local stack."""
    dsns = dict(item.split("=", 1) for item in argv_dsns)
    if not dsns or not nats_url:
        from services.cli.stack import read_state

        state = read_state()
        recorded = state.get("dsns") or {}
        dsns = dsns or {name: recorded[name] for name in SERVICES if name in recorded}
        nats_url = nats_url or state.get("admin_nats_url") or state.get("nats_url")
    if not dsns:
        raise StackError("no local stack recorded: run `make run`, or pass --dsn SERVICE=URL")
    return dsns, nats_url or ""


async def list_dead_letters(
    dsns: Mapping[str, str], *, include_retried: bool = False
) -> list[dict[str, Any]]:
    where = "" if include_retried else "WHERE retried_at IS NULL"
    rows: list[dict[str, Any]] = []
    for service, dsn in dsns.items():
        conn = await asyncpg.connect(dsn, server_settings={"search_path": service})
        try:
            for r in await conn.fetch(LIST_SQL.format(where=where)):
                rows.append({"ref": f"{service}:{r['id']}", "service": service, **dict(r)})
        finally:
            await conn.close()
    return rows


async def retry(dsns: Mapping[str, str], nats_url: str, ref: str) -> str:
    """Republish dead letter `SERVICE:ID`; returns the event id it carried."""
    service, _, raw_id = ref.partition(":")
    if service not in dsns or not raw_id.isdigit():
        raise StackError(f"{ref!r} is not SERVICE:ID (see `marketplace dlq list`)")
    bus = await Bus.connect(nats_url, name="marketplace-dlq")
    conn = await asyncpg.connect(dsns[service], server_settings={"search_path": service})
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT consumer, event_id, subject, payload, headers FROM dead_letter "
                "WHERE id = $1 AND retried_at IS NULL FOR UPDATE",
                int(raw_id),
            )
            if row is None:
                raise StackError(f"no dead letter {ref} waiting for a retry")
            await conn.execute(
                "DELETE FROM inbox WHERE consumer = $1 AND event_id = $2",
                row["consumer"], row["event_id"],
            )  # fmt: skip
            await conn.execute(
                "UPDATE dead_letter SET retried_at = now() WHERE id = $1", int(raw_id)
            )
            headers = dict(orjson.loads(row["headers"]) if isinstance(row["headers"], str)
                           else row["headers"])  # fmt: skip
            headers.setdefault("ce-id", str(row["event_id"]))
            headers["Nats-Msg-Id"] = str(uuid.uuid4())
            await bus.publish(row["subject"], bytes(row["payload"]), headers)
        return str(row["event_id"])
    finally:
        await conn.close()
        await bus.close()


def _print_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no dead letters")
        return
    print(f"  {'ref':<14} {'consumer':<22} {'subject':<28} {'tries':>5}  failed_at / error")
    for r in rows:
        retried = f" (retried {r['retried_at']:%Y-%m-%d %H:%M:%S})" if r["retried_at"] else ""
        print(f"  {r['ref']:<14} {r['consumer']:<22} {r['subject']:<28} {r['deliveries']:>5}  "
              f"{r['failed_at']:%Y-%m-%d %H:%M:%S}{retried}")  # fmt: skip
        print(f"  {'':<14} event {r['event_id']}: {r['error'].splitlines()[-1][:160]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketplace dlq", description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", action="append", default=[], metavar="SERVICE=URL",
                        help="a service's Postgres URL (default: the local stack's)")
    parser.add_argument("--nats-url", help="NATS URL for retry (default: the local stack's)")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="dead letters not yet retried")
    listing.add_argument("--all", action="store_true", help="include retried ones")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    again = sub.add_parser("retry", help="republish dead letters so their consumer applies them")
    again.add_argument("ref", nargs="+", help="SERVICE:ID as shown by `list`")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        dsns, nats_url = stack_targets(ns.dsn, ns.nats_url)
        if ns.action == "list":
            rows = asyncio.run(list_dead_letters(dsns, include_retried=ns.all))
            if ns.json:
                print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
            else:
                _print_rows(rows)
            return 0
        for ref in ns.ref:
            event_id = asyncio.run(retry(dsns, nats_url, ref))
            print(f"  {ref}: event {event_id} republished")
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
