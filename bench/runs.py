"""The measured runs: checkout steps against the stack, overload, and ceiling searches."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench import cpu, generator, probes
from bench.generator import Send, Step, run_step
from bench.output import Row
from bench.pools import Catalog, Shopper
from bench.stack import Target

P99_BOUND_MS = 150.0
OVERLOAD_P99_MS = 300.0
# A ceiling step that keeps p99 under this was not queueing up: the server kept pace.
CEILING_P99_MS = 500.0


@dataclass(frozen=True)
class Ceiling:
    rate: float
    step: Step | None  # the highest step that kept p99 under the bound; None: none did
    steps: list[Step]
    cpu_ms: float = math.nan  # the server's CPU per answered request in that step


def checkout_sender(client: aiohttp.ClientSession, orders_url: str,
                    shoppers: list[Shopper], catalog: Catalog) -> Send:
    """POST /v1/orders as a storefront does: a member's token, a new key, one unit, tok_visa."""
    skus = catalog.skus

    def body(i: int) -> bytes:
        return orjson.dumps({"items": [{"sku_id": skus[i % len(skus)], "quantity": 1}],
                             "payment": {"token": "tok_visa"}})

    def headers(i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {shoppers[i % len(shoppers)].token}",
                "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}

    return generator.http_sender(client, "POST", f"{orders_url}/v1/orders",
                                 body=body, headers=headers)


def browse_sender(client: aiohttp.ClientSession, orders_url: str, categories: list[str],
                  words: list[str]) -> Send:
    """GET /v1/products as a midnight crowd browses: the front page, each category's first
    page in stock, and searches for title words, in turn (a page each request)."""
    base = f"{orders_url}/v1/products?limit=20&in_stock=true"
    urls = [base, *(f"{base}&category={c}" for c in categories),
            *(f"{base}&q={w}" for w in words[:40])]

    async def send(i: int) -> tuple[int, bool]:
        async with client.get(urls[i % len(urls)]) as response:
            await response.read()
            return response.status, "Retry-After" in response.headers

    return send


def monolith_sender(client: aiohttp.ClientSession, url: str) -> Send:
    skus = [str(uuid.UUID(hashlib.md5(f"s{n}".encode()).hexdigest())) for n in range(1, 1001)]
    members = [str(uuid.uuid4()) for _ in range(200)]

    def body(i: int) -> bytes:
        return orjson.dumps({"sku_id": skus[i % len(skus)], "member_id": members[i % 200]})

    def headers(i: int) -> dict[str, str]:
        return {"Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}

    return generator.http_sender(client, "POST", f"{url}/v1/orders", body=body, headers=headers)


def _print_step(label: str, step: Step, extra: str = "") -> None:
    s = step.summary
    print(f"  {label:<9} {s.rate:7.0f}/s  ok {s.ok_per_s:7.1f}/s  p50 {s.p50_ms:7.1f}  "
          f"p99 {s.p99_ms:8.1f} ms  err {s.error_rate:6.2%}  shed {s.shed_rate:6.2%}  "
          f"gen CPU {step.generator_cpu_pct:4.0f}%{extra}", flush=True)


@dataclass(frozen=True)
class Measured:
    """One checkout step against the stack and what each confirmed order cost in it."""

    row: Row
    step: Step
    cpu_ms: dict[str, float]  # per component and `total` (cpu.per_order_ms)
    statements: dict[str, float]  # per role, `commits`, `plans` (StatementCounter.per_order)
    publishes: dict[str, float]  # acked JetStream publishes per confirmed order, per stream


async def stack_steps(
    target: Target, send: Send, rates: list[float], *, step_s: float,
    profile_to: Path | None,
) -> list[Measured]:
    """Each rate for `step_s`, then wait for analytics to count every confirmation."""
    analytics = target.replica_urls("analytics")
    statements = cpu.StatementCounter(target.admin_dsn)
    rows = []
    for n, rate in enumerate(rates):
        await statements.reset()
        before = await probes.lag_histogram(analytics)
        batches_before = await probes.batch_sums(target.replica_urls("orders"))
        stored_before = await probes.stream_sequences(target.nats_url)
        spies = []
        pid = target.pid("orders")
        if profile_to is not None and n == len(rates) - 1 and pid:
            spies = probes.start_profile(pid, profile_to, int(step_s))
        cpu_before = cpu.snapshot(target)
        step = await run_step(send, rate=rate, duration_s=step_s)
        for spy in spies:
            spy.wait(timeout=60)
        after = await probes.wait_for_analytics(analytics, before, step.summary.confirmed)
        # After analytics caught up: the CPU of consuming this step's events is in it too.
        per_order = cpu.per_order_ms(cpu_before, cpu.snapshot(target), step.summary.confirmed)
        confirmed = step.summary.confirmed
        stored = await probes.stream_sequences(target.nats_url)
        publishes = {name: (seq - stored_before.get(name, 0)) / confirmed
                     for name, seq in stored.items()} if confirmed else {}
        lag = probes.lag_p99_ms(before, after)
        _print_step("checkout", step, f"  lag p99 {lag:7.1f} ms")
        print(f"            {cpu.describe(per_order)}", flush=True)
        counts = await statements.per_order(confirmed)
        print(f"            {cpu.describe_statements(counts)}; "
              f"JetStream publishes/order {sum(publishes.values()):.2f}", flush=True)
        row = Row.of("stack", step, lag_p99_ms=lag,
                     cpu_ms_per_order=per_order.get("total", math.nan))
        row.publishes_per_order = sum(publishes.values()) if publishes else math.nan
        batches = probes.mean_batches(
            batches_before, await probes.batch_sums(target.replica_urls("orders")))
        row.batch_place, row.batch_pay, row.batch_settle = (batches[s] for s in probes.STAGES)
        print("            mean batch " + ", ".join(
            f"{stage} {size:.2f}" for stage, size in batches.items()), flush=True)
        if counts:
            row.statements_per_order = sum(counts.get(k, 0.0) for k in cpu.SERVICES)
        rows.append(Measured(row, step, per_order, counts, publishes))
    return rows


async def overload(send: Send, rate: float, *, step_s: float) -> tuple[Row, bool]:
    """Twice the maximum: admitted requests keep p99 <= 300 ms, the rest are shed politely."""
    step = await run_step(send, rate=rate, duration_s=step_s)
    _print_step("overload", step, f"  admitted p99 {step.summary.admitted_p99_ms:.1f} ms")
    s = step.summary
    polite = s.shed == s.shed_with_retry_after
    ok = s.admitted_p99_ms <= OVERLOAD_P99_MS and s.errors == 0 and polite
    return Row.of("overload", step), ok


def _sustained(step: Step) -> bool:
    """Kept up with the offered rate: nearly all answered OK and nothing queueing up."""
    s = step.summary
    return (s.p99_ms < CEILING_P99_MS and s.error_rate <= 0.01 and s.shed == 0
            and s.ok >= 0.97 * s.sent)


async def find_ceiling(
    label: str, send: Send, *, start: float, step_s: float, factor: float = 1.5,
    max_steps: int = 10, cpu_seconds: Callable[[], float] | None = None,
) -> Ceiling:
    """The highest rate sustained: up by `factor` until a step fails, then two bisections
    between the last good and the first bad rate (down from `start` if it fails at once).

    `cpu_seconds`, when given, reads the server's CPU seconds so far (its processes, and the
    database's for the monolith): each step then prints the CPU one answered request cost,
    the floor a service of the same framework cannot go below."""
    steps: list[Step] = []
    best: Step | None = None
    best_cpu = math.nan
    good, bad, rate = 0.0, math.inf, start
    while len(steps) < max_steps:
        before = cpu_seconds() if cpu_seconds else math.nan
        step = await run_step(send, rate=rate, duration_s=step_s)
        answered = step.summary.ok_per_s * step_s
        cpu_ms = (1000.0 * (cpu_seconds() - before) / answered
                  if cpu_seconds and answered else math.nan)
        steps.append(step)
        _print_step(label, step, "" if math.isnan(cpu_ms) else f"  server CPU {cpu_ms:.2f} ms/req")
        if _sustained(step):
            good, best, best_cpu = rate, step, cpu_ms
        else:
            bad = rate
        if math.isinf(bad):
            rate *= factor
        elif good == 0.0:
            rate /= 2
        elif bad / good > 1.12:
            rate = (good + bad) / 2
        else:
            break
    return Ceiling(best.summary.ok_per_s if best else 0.0, best, steps, best_cpu)
