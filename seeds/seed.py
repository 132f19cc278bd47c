"""Load the demo catalog (COPY, with `orders.product.created` outbox rows) and demo members.

`marketplace seed` (or `python -m seeds`) and `marketplace up` call this. Demo members sign
in as demo01@example.com ... demo20@example.com with the password DEMO_PASSWORD.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from marketplace.events.v1 import events_pb2 as ev

from seeds.catalog import COLUMNS, MERCHANTS, Catalog, generate
from services.common import auth
from services.common.events import envelope_headers
from services.common.migrations import SERVICES_DIR, migrate
from services.orders.settings import OrdersSettings
from services.orders.store import stock

SCHEMA = "orders"
HOT_SKU_BUCKETS: int = OrdersSettings.model_fields["hot_sku_buckets"].default
DEMO_MEMBERS = 20
DEMO_PASSWORD = "Demo-Shopper-2015"
_REGIONS = ("CN-BJ", "CN-SH", "CN-GD", "CN-ZJ", "CN-SC", "CN-JS")
_GENDERS = ("female", "male", "female", "male", "other")


class Progress:
    """A one-line progress bar on stderr (silent when off)."""

    def __init__(self, total: int, *, enabled: bool, label: str = "seeding") -> None:
        self.total, self.enabled, self.label, self.done = total, enabled, label, 0

    def advance(self, n: int, what: str) -> None:
        self.done += n
        if self.enabled:
            filled = 30 * self.done // self.total
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                             f"{100 * self.done // self.total:3d}% {what:<24}")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


async def seed_if_empty(
    dsns: Mapping[str, str], *, membership_url: str | None = None, progress: bool = True
) -> bool:
    """Seed the catalog when it has no products; True if it did. Demo members need the URL."""
    # A plain connection (no JSON codecs): COPY needs asyncpg's binary jsonb codec.
    conn = await asyncpg.connect(
        dsns[SCHEMA], server_settings={"search_path": SCHEMA, "application_name": "seed"})
    try:
        await migrate(conn, schema=SCHEMA, service_dir=SERVICES_DIR / SCHEMA)
        seeded = await _load(conn, progress=progress)
    finally:
        await conn.close()
    if seeded and membership_url:
        await create_demo_members(membership_url, progress=progress)
    return seeded


async def _load(conn: asyncpg.Connection, *, progress: bool) -> bool:
    catalog = generate([auth.hash_api_key(auth.new_api_key("mk")) for _ in range(MERCHANTS)])
    bar = Progress(len(catalog.merchants) + len(catalog.products) * 2 + len(catalog.skus),
                   enabled=progress)
    async with conn.transaction():
        # Two seeders at once (two `up`s): the second waits, then finds the catalog full.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('seed:orders'))")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM products)"):
            return False
        for table in ("merchants", "products", "skus"):
            records = getattr(catalog, table)
            if table == "skus":  # jsonb goes through COPY as text
                records = [(*r[:2], orjson.dumps(r[2]).decode(), *r[3:]) for r in records]
            await conn.copy_records_to_table(
                table, records=records, columns=COLUMNS[table], schema_name=SCHEMA)
            bar.advance(len(records), table)
        await _product_events(conn, catalog)
        # Hot (flash-sale) products keep their stock in bucket rows, as checkout expects.
        await stock.bucket_all_hot(conn, buckets=HOT_SKU_BUCKETS)
        bar.advance(len(catalog.products), "outbox events")
    return True


async def _product_events(conn: asyncpg.Connection, catalog: Catalog) -> None:
    """One `orders.product.created` per product, in one statement."""
    sku_ids: dict[uuid.UUID, list[str]] = {p[0]: [] for p in catalog.products}
    for sku in catalog.skus:
        sku_ids[sku[1]].append(str(sku[0]))
    subject = "orders.product.created"
    ids, aggregates, payloads, headers = [], [], [], []
    for p in catalog.products:
        event_id = uuid.uuid4()  # fresh ids: JetStream must not de-duplicate a re-seed
        message = ev.ProductChanged(product_id=str(p[0]), merchant_id=str(p[1]), title=p[2],
                                    category=p[4], sku_ids=sku_ids[p[0]])
        ids.append(event_id)
        aggregates.append(str(p[0]))
        payloads.append(message.SerializeToString())
        headers.append(orjson.dumps(envelope_headers(subject, event_id, SCHEMA)).decode())
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers) "
        "SELECT e, $1, a, p, h::jsonb FROM unnest($2::uuid[], $3::text[], $4::bytea[], "
        "$5::text[]) AS t(e, a, p, h)",
        subject, ids, aggregates, payloads, headers,
    )


def demo_member(n: int) -> dict[str, Any]:
    return {
        "email": f"demo{n:02d}@example.com", "password": DEMO_PASSWORD,
        "name": f"Demo Shopper {n:02d}", "birth_year": 1960 + (n * 7) % 45,
        "region": _REGIONS[n % len(_REGIONS)], "gender": _GENDERS[n % len(_GENDERS)],
    }


async def create_demo_members(
    membership_url: str, *, count: int = DEMO_MEMBERS, progress: bool = True
) -> int:
    """Register demo01..demoNN through membership's REST API; returns how many were new."""
    created = 0
    bar = Progress(count, enabled=progress, label="members")
    async with httpx.AsyncClient(base_url=membership_url, timeout=10) as client:
        for n in range(1, count + 1):
            response = await client.post("/v1/members", json=demo_member(n))
            if response.status_code == 201:
                created += 1
            elif response.status_code != 409:  # 409: registered by an earlier seed
                raise RuntimeError(f"membership refused demo member {n}: "
                                   f"{response.status_code} {response.text[:200]}")
            bar.advance(1, f"demo{n:02d}")
    return created


def _local_dsns(data_dir: str | None) -> dict[str, str]:
    """DSNs recorded by `marketplace up` / `stack start` in .data/stack.json."""
    from services.cli.stack import DataPaths, read_state

    paths = DataPaths(Path(data_dir)) if data_dir else DataPaths.default()
    dsns = read_state(paths).get("dsns")
    return dict(dsns) if isinstance(dsns, dict) else {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marketplace seed", description=__doc__)
    parser.add_argument("--orders-dsn", help="the orders role's postgresql:// URL "
                        "(default: from .data/stack.json)")
    parser.add_argument("--membership-url", help="also register demo members there, "
                        "e.g. http://127.0.0.1:8002")
    parser.add_argument("--data-dir", help="the local stack's directory (default: .data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    dsns = {SCHEMA: args.orders_dsn} if args.orders_dsn else _local_dsns(args.data_dir)
    if SCHEMA not in dsns:
        print("error: no orders DSN; start the stack (`marketplace up`) or pass --orders-dsn",
              file=sys.stderr)
        return 2
    seeded = asyncio.run(seed_if_empty(dsns, membership_url=args.membership_url,
                                       progress=not args.no_progress))
    if not seeded and args.membership_url:
        asyncio.run(create_demo_members(args.membership_url, progress=not args.no_progress))
    print("seeded the catalog" if seeded else "the catalog already has products; left as is")
    return 0


