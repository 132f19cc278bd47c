"""What `make bench-growth` measures at each history size, beside the checkout steps: reads
a member with a long history makes, the dashboard's and recovery's statements, the purge,
the audits (as the operator runs them) and the database's size."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import aiohttp
import asyncpg
import psutil

from bench import generator
from bench.generator import Step
from services.analytics import live
from services.common.purge import Purge, run_batch
from services.orders.settings import OrdersSettings
from services.orders.store import orders as order_store

_ORDERS = OrdersSettings.model_fields


def reads_sender(client: aiohttp.ClientSession, orders_url: str, token: str,
                 paths: list[str]) -> generator.Send:
    """GETs as the member, in turn over `paths`."""

    async def send(i: int) -> tuple[int, bool]:
        async with client.get(f"{orders_url}{paths[i % len(paths)]}",
                              headers={"Authorization": f"Bearer {token}"}) as response:
            await response.read()
            return response.status, "Retry-After" in response.headers

    return send


async def member_reads(orders_url: str, token: str, *, rate: float,
                       seconds: float) -> tuple[Step, Step]:
    """`GET /v1/orders` (first pages) and `GET /v1/orders/{id}` (orders from across the
    member's history), each open-loop at `rate`."""
    async with generator.session() as client:
        ids: list[str] = []
        cursor = ""
        for _ in range(10):  # 1,000 orders: ten pages of 100
            async with client.get(f"{orders_url}/v1/orders?limit=100{cursor}",
                                  headers={"Authorization": f"Bearer {token}"}) as answer:
                page = await answer.json()
            ids += [o["id"] for o in page["items"]]
            if not page.get("next_cursor"):
                break
            cursor = f"&cursor={page['next_cursor']}"
        lists = await generator.run_step(
            reads_sender(client, orders_url, token, ["/v1/orders?limit=20"]),
            rate=rate, duration_s=seconds)
        views = await generator.run_step(
            reads_sender(client, orders_url, token, [f"/v1/orders/{i}" for i in ids[::7]]),
            rate=rate, duration_s=seconds)
    return lists, views


async def median_ms(dsn: str, statement: Callable[[asyncpg.Connection], Awaitable[object]],
                    *, times: int = 15, rollback: bool = False) -> float:
    """The median time of `statement` over `times` runs on one connection (each in a
    transaction rolled back when it writes)."""
    conn = await asyncpg.connect(dsn)
    try:
        took = []
        for _ in range(times):
            tx = conn.transaction()
            await tx.start()
            started = time.perf_counter()
            await statement(conn)
            took.append(1000 * (time.perf_counter() - started))
            await (tx.rollback() if rollback else tx.commit())
        return statistics.median(took)
    finally:
        await conn.close()


async def dashboard_ms(analytics_dsn: str) -> float:
    """The live dashboard's figures (what each SSE tick computes)."""
    from datetime import UTC, datetime

    return await median_ms(analytics_dsn, lambda c: live.snapshot(c, datetime.now(UTC)))


async def recovery_scan_ms(orders_dsn: str) -> float:
    """Recovery's claim of due PENDING orders (rolled back: nothing is leased)."""
    return await median_ms(orders_dsn, lambda c: order_store.claim_due(
        c, limit=_ORDERS["recovery_batch"].default, lease_s=30.0,
        backoff_s=_ORDERS["recovery_backoff_s"].default,
        max_backoff_s=_ORDERS["recovery_backoff_max_s"].default), rollback=True)


async def window_orders(auditor_dsn: str, since: timedelta) -> int:
    """The orders `audit --since` finds changed in its window (audit_window's definition)."""
    conn = await asyncpg.connect(auditor_dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM orders.orders WHERE updated_at >= now() - $1::interval",
            since))
    finally:
        await conn.close()


async def purge_us_per_row(dsn: str, *, keep: timedelta, batch: int = 1000) -> tuple[float, int]:
    """Orders' outbox purged of rows published more than `keep` ago, batch by batch as the
    service does: (µs per deleted row, rows deleted)."""
    purge = Purge("outbox", "published_at < now() - $2::interval", keep)
    conn = await asyncpg.connect(dsn)
    try:
        deleted, started = 0, time.perf_counter()
        while True:
            async with conn.transaction():
                n = await run_batch(conn, purge, batch=batch)
            deleted += n
            if n < batch:
                break
        took = time.perf_counter() - started
    finally:
        await conn.close()
    return (1e6 * took / deleted if deleted else float("nan")), deleted


def audit(auditor_dsn: str, *extra: str) -> tuple[float, float, bool]:
    """`marketplace audit` as the operator runs it: (seconds, peak RSS in MiB, clean)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.audit", "--dsn", auditor_dsn, "--settle", "0",
         "--quiet", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started, peak = time.perf_counter(), 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.05)
    return time.perf_counter() - started, peak / 2**20, proc.returncode == 0


async def database_mib(admin_dsn: str) -> float:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return float(await conn.fetchval("SELECT pg_database_size(current_database())")) / 2**20
    finally:
        await conn.close()


async def sign_in(membership_url: str, email: str, password: str) -> str:
    async with generator.session() as client, client.post(
            f"{membership_url}/v1/auth/token", json={"email": email, "password": password},
    ) as answer:
        if answer.status != 200:
            raise RuntimeError(f"cannot sign in {email}: {answer.status} {await answer.text()}")
        return str((await answer.json())["access_token"])
