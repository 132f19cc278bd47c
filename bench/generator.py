"""The open-loop generator: sends on a fixed clock, measures from the intended send time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from bench.openloop import Outcome, StepSummary, schedule, summarize

# One request: given its sequence number, send it and return (status, has Retry-After).
Send = Callable[[int], Awaitable[tuple[int, bool]]]


@dataclass(frozen=True)
class Step:
    summary: StepSummary
    generator_cpu_pct: float  # this process's CPU over the step; 100 = one full core
    behind_ms: float  # how late the generator itself launched its last request


def session(*, connections: int = 1000) -> aiohttp.ClientSession:
    """A client session that never caps concurrency below what the open loop needs."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                     ttl_dns_cache=None, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def run_step(send: Send, *, rate: float, duration_s: float, timeout_s: float = 10.0) -> Step:
    """Send `rate` requests a second for `duration_s`; wait for every answer (or timeout)."""
    loop = asyncio.get_running_loop()
    offsets = schedule(rate, duration_s)
    start = loop.time() + 0.05
    cpu_start, wall_start = time.process_time(), time.perf_counter()

    async def one(i: int, due: float) -> Outcome:
        try:
            async with asyncio.timeout(timeout_s):
                status, retry_after = await send(i)
        except (aiohttp.ClientError, TimeoutError, OSError):
            status, retry_after = 0, False
        return Outcome(due - start, loop.time() - due, status, retry_after)

    tasks = []
    behind = 0.0
    for i, offset in enumerate(offsets):
        due = start + offset
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = -delay
        tasks.append(asyncio.create_task(one(i, due)))
    outcomes = await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    return Step(summarize(rate, duration_s, outcomes), 100.0 * cpu / wall, behind * 1000)


def http_sender(
    client: aiohttp.ClientSession, method: str, url: str,
    *, body: Callable[[int], bytes] | None = None,
    headers: Callable[[int], dict[str, str]] | None = None,
) -> Send:
    """A Send for one URL; `body` and `headers` vary per request number."""

    async def send(i: int) -> tuple[int, bool]:
        async with client.request(
            method, url, data=body(i) if body else None,
            headers=headers(i) if headers else None,
        ) as response:
            await response.read()
            return response.status, "Retry-After" in response.headers

    return send
