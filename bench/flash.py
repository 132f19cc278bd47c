"""`python -m bench --flash`: the flash-sale decision rate on one hot SKU (issue 3), beside
pgbench running that SKU's decision SQL (`bench/flash.pgbench.sql`) in the same run.

A *decision* is an answer that settles a buyer's fate: 201 (sold), 409 (sold out),
429 (refused at admission) or 503 (shed). The stock is not refilled: the SKU sells what it
has (printed before and after), and once it is gone the answers are 409s, which are still
decisions. The decision rate is decisions over the offered window, like confirmed/s.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import httpx
import orjson

from bench import ceilings, cpu, generator
from bench.generator import Send, run_step
from bench.openloop import Outcome, percentile
from bench.output import Row
from bench.pools import Catalog, Shopper
from bench.stack import Target

SCRIPT = Path(__file__).with_name("flash.pgbench.sql")
DECISIONS = {201: "sold", 409: "sold out", 429: "refused", 503: "shed"}
BUCKETS = 8  # services/orders/settings.py `hot_sku_buckets` default; flash.pgbench.sql too
BUCKET_STOCK = 1_000_000_000


def decisions(outcomes: Iterable[Outcome], duration_s: float) -> tuple[float, Counter[int]]:
    """Decisions a second over the offered window, and the count of every status (0: none)."""
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    counts = Counter(o.status for o in outcomes)
    return sum(counts[s] for s in DECISIONS) / duration_s, counts


def decision_latency_ms(outcomes: Iterable[Outcome]) -> tuple[float, float, float]:
    """p50, p95 and p99 (ms, from the intended send time) of the answers that are decisions."""
    ms = [o.latency_s * 1000 for o in outcomes if o.status in DECISIONS]
    return percentile(ms, 50), percentile(ms, 95), percentile(ms, 99)


@dataclass(frozen=True)
class Call:
    i: int
    called_at: float
    answered_at: float
    status: int


def outcomes_of(calls: Iterable[Call], rate: float) -> list[Outcome]:
    """Outcomes measured from each request's intended send time `start + i / rate`.

    run_step keeps its outcomes to itself, so the sender records its calls; `start` is
    the earliest `called_at - i / rate` (a call never begins before it is due).
    """
    done = list(calls)
    if not done:
        return []
    start = min(c.called_at - c.i / rate for c in done)
    return [Outcome(c.i / rate, c.answered_at - (start + c.i / rate), c.status)
            for c in done]


def _recording(send: Send, calls: list[Call]) -> Send:
    async def recorded(i: int) -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        called = loop.time()
        status = 0
        try:
            status, retry_after = await send(i)
            return status, retry_after
        finally:  # errors, client timeouts and cancellation record 0, as run_step does
            calls.append(Call(i, called, loop.time(), status))

    return recorded


async def _door_floor(client: aiohttp.ClientSession, target: Target, shoppers: list[Shopper],
                      sku_id: str, *, rate: float, seconds: float) -> float:
    """CPU ms per request of bench/door.py's fixed 429 for the flash sale's own requests
    (same body and headers) at the same offered rate."""
    with ceilings.app_process("bench.door:app", target.port_base + 92) as server:
        before = cpu.process_seconds(server.pid)
        step = await run_step(_sender(client, server.url, shoppers, sku_id),
                              rate=rate, duration_s=seconds)
        spent = cpu.process_seconds(server.pid) - before
    answered = step.summary.sent - step.summary.errors
    return 1000.0 * spent / answered if answered else math.nan


def _sender(client: aiohttp.ClientSession, orders_url: str, shoppers: list[Shopper],
            sku_id: str) -> Send:
    body = orjson.dumps({"items": [{"sku_id": sku_id, "quantity": 1}],
                         "payment": {"token": "tok_visa"}})

    def headers(i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {shoppers[i % len(shoppers)].token}",
                "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}

    return generator.http_sender(client, "POST", f"{orders_url}/v1/orders",
                                 body=lambda i: body, headers=headers)


async def _hot_stock(orders_url: str, cat: Catalog) -> dict[str, int]:
    """Units on hand of every hot SKU the catalog walk found, from GET /v1/products/{id}."""
    wanted = set(cat.hot_skus)
    stock: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=orders_url, timeout=30.0) as client:
        for product_id in cat.hot_products:
            product = (await client.get(f"/v1/products/{product_id}")).raise_for_status().json()
            for sku in product["skus"]:
                if sku["id"] in wanted:
                    stock[sku["id"]] = sku["stock_available"]
    return stock


async def _prepare_db(admin_dsn: str) -> str:
    """A fresh scratch `bench_ceiling` with one SKU's bucket rows that never run out."""
    dsn = await ceilings.scratch_db(admin_dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(  # as orders.sku_stock_buckets: (sku, bucket) key, checked stock
            "CREATE TABLE flash_buckets (sku integer NOT NULL, "
            "bucket integer NOT NULL CHECK (bucket >= 0), "
            "stock integer NOT NULL CHECK (stock >= 0), PRIMARY KEY (sku, bucket))")
        await conn.execute("INSERT INTO flash_buckets SELECT 1, b, $1 "
                           "FROM generate_series(0, $2 - 1) AS b", BUCKET_STOCK, BUCKETS)
    finally:
        await conn.close()
    return dsn


def _counts_text(counts: Counter[int]) -> str:
    parts = [f"{DECISIONS.get(s, 'no answer' if s == 0 else 'other')} ({s}) {n}"
             for s, n in sorted(counts.items())]
    return ", ".join(parts) or "nothing"


async def run(target: Target, cat: Catalog, shoppers: list[Shopper], *, rate: float,
              seconds: int) -> list[Row]:
    """One hot SKU at `rate` checkouts a second for `seconds`, then pgbench on its SQL."""
    orders_url = target.url("orders")
    print(f"\nflash sale: one hot SKU at {rate:.0f}/s for {seconds} s "
          f"from {len(shoppers)} members:")
    stock = await _hot_stock(orders_url, cat)
    if not stock or not shoppers:
        print("  no hot SKU with stock (or no members): flash section skipped")
        return []
    sku_id = max(stock, key=lambda s: stock[s])
    print(f"  SKU {sku_id}: {stock[sku_id]} units on hand before (not restocked)")
    calls: list[Call] = []
    async with generator.session() as client:
        send = _recording(_sender(client, orders_url, shoppers, sku_id), calls)
        before = cpu.snapshot(target)
        step = await run_step(send, rate=rate, duration_s=seconds)
        spent = cpu.snapshot(target)
    outcomes = outcomes_of(calls, rate)
    per_s, counts = decisions(outcomes, seconds)
    p50, p95, p99 = decision_latency_ms(outcomes)
    after = (await _hot_stock(orders_url, cat)).get(sku_id)
    # Nearly every decision is a refusal at the door (429 from the gate, 409 sold out), so
    # orders' CPU per decision is what a refused checkout costs it.
    per_decision = cpu.per_order_ms(before, spent, round(per_s * seconds))
    print(f"  decisions {per_s:7.1f}/s  p50 {p50:7.1f}  p99 {p99:8.1f} ms  "
          f"gen CPU {step.generator_cpu_pct:4.0f}%  (generator behind {step.behind_ms:.0f} ms)")
    print(f"  answers: {_counts_text(counts)}; {after} units on hand after")
    if per_decision:
        print(f"  CPU per decided checkout: orders {per_decision['orders']:.3f} ms, "
              f"the whole stack {per_decision['total']:.3f} ms")
        async with generator.session() as client:
            floor = await _door_floor(client, target, shoppers, sku_id,
                                      rate=rate, seconds=min(seconds, 5))
        print(f"  floor: a bare uvicorn answer (bench/door.py) costs {floor:.3f} ms of CPU "
              f"per request at {rate:.0f}/s")

    dsn = await _prepare_db(target.admin_dsn)
    try:
        pg = await asyncio.to_thread(
            ceilings.run_pgbench, dsn, seconds=seconds, script=SCRIPT, search_path=None)
    finally:
        await ceilings.drop_db(target.admin_dsn)
    ratio = per_s / pg.tps if pg.tps else math.nan
    print(f"  pgbench   {pg.tps:9.0f} tps  latency {pg.latency_ms:.2f} ms  ({pg.clients} "
          f"clients, conditional decrement of one of {BUCKETS} bucket rows)")
    print(f"  decisions/s / pgbench tps = {ratio:.3f}")

    row = Row.of("flash", step)  # achieved/s: 2xx (sold) a second
    row.confirmed_per_s = per_s  # the decision rate, as pgbench's tps in its row
    row.p50_ms, row.p95_ms, row.p99_ms = p50, p95, p99  # of decisions only
    row.ratio_to_pgbench = ratio
    # Per decision here (nearly all refusals), not per confirmed order: orders' share.
    row.cpu_ms_per_order = per_decision.get("orders", math.nan)
    pg_row = Row("flash-pgbench", math.nan, confirmed_per_s=pg.tps, achieved_per_s=pg.tps)
    return [row, pg_row]
