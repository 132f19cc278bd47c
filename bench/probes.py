"""What a run reads from the stack: analytics' lag histogram, the streams' message counts,
and py-spy on a process."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from bench.openloop import histogram_quantile
from services.common.events import STREAMS

LAG = "marketplace_analytics_confirmation_to_gmv_seconds"


async def stream_sequences(nats_url: str) -> dict[str, int]:
    """Messages ever stored in each of the marketplace's streams (its last sequence): the
    difference over a step is the acked publishes the stack made into it."""
    nc = await nats.connect(servers=nats_url.split(","), connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10.0)
        return {name: (await js.stream_info(name)).state.last_seq for name in STREAMS}
    finally:
        await nc.close()


async def lag_histogram(analytics_urls: Sequence[str]) -> dict[float, float]:
    """Cumulative buckets {le: count} of the confirmation-to-GMV histogram, now, summed over
    every analytics process."""
    buckets: dict[float, float] = {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        for url in analytics_urls:
            text = (await client.get(f"{url}/metrics")).raise_for_status().text
            for family in text_string_to_metric_families(text):
                for sample in family.samples if family.name == LAG else ():
                    if sample.name == f"{LAG}_bucket":
                        le = float(sample.labels["le"])
                        buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


BATCH = "marketplace_orders_batch_size"
STAGES = ("place", "pay", "settle")


async def batch_sums(orders_urls: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{stage: (checkouts, batches)} so far, summed over every orders process."""
    sums: dict[str, tuple[float, float]] = {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        for url in orders_urls:
            text = (await client.get(f"{url}/metrics")).raise_for_status().text
            for family in text_string_to_metric_families(text):
                for sample in family.samples if family.name == BATCH else ():
                    stage = sample.labels.get("stage", "")
                    total, count = sums.get(stage, (0.0, 0.0))
                    if sample.name == f"{BATCH}_sum":
                        sums[stage] = (total + sample.value, count)
                    elif sample.name == f"{BATCH}_count":
                        sums[stage] = (total, count + sample.value)
    return sums


def mean_batches(before: dict[str, tuple[float, float]],
                 after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean checkouts per batch of each stage between two scrapes (NaN: no batch)."""
    means = {}
    for stage in STAGES:
        total = after.get(stage, (0.0, 0.0))[0] - before.get(stage, (0.0, 0.0))[0]
        count = after.get(stage, (0.0, 0.0))[1] - before.get(stage, (0.0, 0.0))[1]
        means[stage] = total / count if count else math.nan
    return means


def lag_p99_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """p99 of the lags observed between two scrapes, in ms (NaN: none observed)."""
    diff = [(le, after[le] - before.get(le, 0.0)) for le in after]
    return histogram_quantile(diff, 0.99) * 1000


def lag_count(buckets: dict[float, float]) -> float:
    return buckets.get(math.inf, 0.0)


async def wait_for_analytics(analytics_urls: Sequence[str], before: dict[float, float],
                             confirmed: int, *, within_s: float = 30.0) -> dict[float, float]:
    """Wait (bounded) until analytics has counted `confirmed` more confirmations."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        after = await lag_histogram(analytics_urls)
        if lag_count(after) - lag_count(before) >= confirmed or loop.time() > deadline:
            return after
        await asyncio.sleep(0.25)


def start_profile(pid: int, out: Path, duration_s: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on `pid`: a flame graph (SVG) and collapsed stacks (raw) for top_costs()."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    out.parent.mkdir(parents=True, exist_ok=True)
    common = ["record", "--pid", str(pid), "--duration", str(duration_s), "--nonblocking",
              "--rate", "200"]
    return [
        subprocess.Popen([spy, *common, "-o", str(out.with_suffix(".svg"))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([spy, *common, "--format", "raw", "-o", str(out.with_suffix(".txt"))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]


def top_costs(collapsed: Path, *, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's raw (collapsed) stacks: the share of samples per function, as
    `self` (the leaf frame: where the CPU went) and `project` (inclusive, our code only)."""
    leaf: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        n, frames = int(count), stack.split(";")
        total += n
        leaf[frames[-1]] += n
        for frame in {f for f in frames if "services/" in f or "(services" in f}:
            ours[frame] += n
    if not total:
        return {"self": [], "project": []}
    return {name: [(frame, 100.0 * n / total) for frame, n in counter.most_common(top)]
            for name, counter in (("self", leaf), ("project", ours))}
