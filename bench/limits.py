"""What a cluster-wide rate limit costs per request, on a real (embedded) Postgres.

    python -m bench.limits [--calls 5000]

Prints, per call: statements sent, the client's CPU (this process: asyncpg and the
limiter), the Postgres backend's CPU, and wall time, for
  - a sign-in limit hit (membership: one upsert, its own statement and commit);
  - the same upsert refused (a failed statement, then the read of the wait);
  - a checkout placed by orders' one-statement placing, with the member's rate folded in,
    against the same statement with the `metered` part cut out: the difference is what
    the checkout limit adds to the checkout's hot path.
It starts its own Postgres in a temporary directory and removes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import psutil
from marketplace.events.v1 import events_pb2 as ev

from services.cli.pgserver import start_postgres, stop_postgres
from services.cli.procs import find_port
from services.common import db, outbox, ratelimit
from services.common.migrations import SERVICES_DIR, migrate
from services.common.ratelimit import Rate, SharedLimit
from services.orders.store import orders as store
from services.orders.store.orders import Line, Order

Step = Callable[[int], Awaitable[None]]


async def measure(conn: asyncpg.Connection, label: str, calls: int, step: Step,
                  statements: int) -> None:
    backend = psutil.Process(conn.get_server_pid())
    for i in range(min(200, calls)):  # warm: plans cached, pages in memory
        await step(-i - 1)
    server0, client0, wall0 = sum(backend.cpu_times()[:2]), time.process_time(), time.perf_counter()
    for i in range(calls):
        await step(i)
    wall = time.perf_counter() - wall0
    client = time.process_time() - client0
    server = sum(backend.cpu_times()[:2]) - server0
    print(f"{label:<44} {statements:>3} stmt  client {client / calls * 1e6:7.1f} µs  "
          f"postgres {server / calls * 1e6:7.1f} µs  wall {wall / calls * 1e6:7.1f} µs")


def _order(sku: tuple[uuid.UUID, uuid.UUID], member: uuid.UUID) -> Order:
    line = Line(sku_id=sku[0], product_id=sku[1], merchant_id=uuid.uuid4(), category="apparel",
                quantity=1, unit_price=9_900, line_total=9_900)
    now = datetime.now(UTC)
    return Order(id=uuid.uuid4(), member_id=member, status="PENDING", subtotal=9_900,
                 discount=0, points_redeemed=0, total=9_900, currency="CNY",
                 payment_token="tok_visa", payment_id=None, cancel_reason=None,
                 idempotency_key=uuid.uuid4().hex, payment_deadline=now + timedelta(minutes=15),
                 points_pending=False, created_at=now, lines=(line,))


def _without_meter(sql: str) -> str:
    """The placing statement as it was before the rate was folded in (its parameters
    still named, so that the same arguments bind)."""
    start, end = sql.index("), metered AS ("), sql.index("SELECT (SELECT count(*) FROM claimed)")
    return (sql[:start] + ")\n" + sql[end:]).replace(
        "(SELECT count(*) FROM metered)", "($30::text, $31::interval, $32::interval) IS NULL")


async def _catalog(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    merchant, product, sku = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute("INSERT INTO merchants (id, name, api_key_hash) VALUES ($1, 'm', 'h')",
                       merchant)
    await conn.execute("INSERT INTO products (id, merchant_id, title, description, category) "
                       "VALUES ($1, $2, 't', '', 'apparel')", product, merchant)
    await conn.execute("INSERT INTO skus (id, product_id, attributes, price, stock, "
                       "initial_stock) VALUES ($1, $2, '{}', 9900, 1000000000, 1000000000)",
                       sku, product)
    return sku, product


async def run(dsn: str, calls: int) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE SCHEMA orders")
        await migrate(admin, schema="orders", service_dir=SERVICES_DIR / "orders")
    finally:
        await admin.close()
    conn = await db.connect(dsn, schema="orders", application_name="bench-limits")
    try:
        sku = await _catalog(conn)
        logins = SharedLimit("login-email", Rate.per_window(10**6, 300.0))
        await measure(conn, "sign-in limit: allowed hit", calls,
                      lambda i: logins.hit(conn, f"user{i % 1000}@example.cn"), 1)
        tight = SharedLimit("login-email", Rate.per_window(1, 3600.0))
        await tight.hit(conn, "locked@example.cn")

        async def refused(_: int) -> None:
            tight._refused_until.clear()  # measure the database's refusal, not the memory's
            assert await tight.hit(conn, "locked@example.cn") > 0

        await measure(conn, "sign-in limit: refused hit (no memory)", calls, refused, 2)
        await measure(conn, "sign-in limit: refused from memory", calls,
                      lambda _: tight.hit(conn, "locked@example.cn"), 0)

        members = SharedLimit("checkout-member", Rate.per_second(10**6, 10.0))

        def placing(sql: str) -> Step:
            async def step(i: int) -> None:
                order = _order(sku, uuid.UUID(int=i % 1000 + 1))
                event = outbox.pending(source="orders", subject="orders.order.placed",
                                       aggregate_id=str(order.id),
                                       message=ev.OrderPlaced(order_id=str(order.id)))
                store._PLACE = sql  # type: ignore[misc]
                assert await store.place(
                    conn, order, retry_at=order.created_at, request_hash="h",
                    claim_timeout_s=60, event=event, rate=members.params())
            return step

        metered = store._PLACE
        await measure(conn, "checkout placing, without the member rate", calls,
                      placing(_without_meter(metered)), 1)
        await measure(conn, "checkout placing, member rate folded in", calls,
                      placing(metered), 1)
        store._PLACE = metered  # type: ignore[misc]
        await ratelimit.purge_expired(conn)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    try:
        server = start_postgres(root / "pg", admin_password="bench-limits",
                                log_file=root / "postgres.log",
                                port=find_port(55432, "bench Postgres"))
        try:
            asyncio.run(run(server.admin_dsn, args.calls))
        finally:
            stop_postgres(root / "pg")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
