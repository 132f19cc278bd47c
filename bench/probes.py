"""What a run reads from the stack: analytics' lag histogram, and py-spy on a process."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.openloop import histogram_quantile

LAG = "analytics_confirmation_to_gmv_seconds"


async def lag_histogram(analytics_url: str) -> dict[float, float]:
    """Cumulative buckets {le: count} of the confirmation-to-GMV histogram, now."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        text = (await client.get(f"{analytics_url}/metrics")).raise_for_status().text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LAG:
            continue
        for sample in family.samples:
            if sample.name == f"{LAG}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def lag_p99_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """p99 of the lags observed between two scrapes, in ms (NaN: none observed)."""
    diff = [(le, after[le] - before.get(le, 0.0)) for le in after]
    return histogram_quantile(diff, 0.99) * 1000


def lag_count(buckets: dict[float, float]) -> float:
    return buckets.get(math.inf, 0.0)


async def wait_for_analytics(analytics_url: str, before: dict[float, float], confirmed: int,
                             *, within_s: float = 30.0) -> dict[float, float]:
    """Wait (bounded) until analytics has counted `confirmed` more confirmations."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        after = await lag_histogram(analytics_url)
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
