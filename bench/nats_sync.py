"""What one JetStream stream leader sustains: acked publishes/s with `sync_interval: always`
on one server (R1) and on a three-node cluster (R3), and what `sync_interval: 2m` changes on
one server. Scratch servers in a temporary directory, on free ports; nothing of the stack's.

    .venv/bin/python -m bench.nats_sync [N]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.cli.natscluster import start_nats_cluster
from services.cli.natsserver import start_nats, stop_nats
from services.common.bus import Bus
from tests.infra import free_port

PAYLOAD = b"x" * 300  # about an OrderConfirmed with two lines
CONCURRENCY = 32  # in-flight publishes, as an outbox relay's parallel aggregates
SATURATING = 256  # enough in flight that the leader, not the round trip, is the limit
SUBJECT = "orders.order.confirmed"  # one subject of one stream: one leader takes them all


@dataclass(frozen=True)
class Publishing:
    """Acked publishes/s into one stream: one at a time, 32 and 256 in flight."""

    sequential: float
    concurrent: float
    saturating: float

    @property
    def ceiling(self) -> float:
        return max(self.sequential, self.concurrent, self.saturating)


async def _rate(bus: Bus, n: int, in_flight: int) -> float:
    async def one() -> None:
        await bus.publish(SUBJECT, PAYLOAD, {"Nats-Msg-Id": str(uuid.uuid4())})

    rounds = max(1, n // in_flight)
    started = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(in_flight)))
    return rounds * in_flight / (time.perf_counter() - started)


async def measure(url: str, n: int, *, replicas: int = 1) -> Publishing:
    """Every publish awaited for its ack, into streams of `replicas` copies."""
    bus = await Bus.connect(url, name="bench-nats-sync", replicas=replicas)
    try:
        await bus.ensure_streams()
        await _rate(bus, min(n, 200), CONCURRENCY)  # not measured: the stream's first writes
        return Publishing(await _rate(bus, n, 1), await _rate(bus, n, CONCURRENCY),
                          await _rate(bus, n, SATURATING))
    finally:
        await bus.close()


def run(sync_interval: str, n: int) -> Publishing:
    """One server (R1 streams) with `sync_interval`."""
    root = Path(tempfile.mkdtemp(prefix="nats-sync-bench-"))
    server = start_nats(root / "nats.conf", root / "js", log_file=root / "nats.log",
                        port=free_port(), monitor_port=free_port(), sync_interval=sync_interval)
    try:
        return asyncio.run(measure(server.url, n))
    finally:
        stop_nats(server.pid, root / "nats.conf")
        shutil.rmtree(root, ignore_errors=True)


def run_cluster(n: int) -> Publishing:
    """Three nodes as `marketplace up --nats-cluster` runs them (sync always), R3 streams."""
    root = Path(tempfile.mkdtemp(prefix="nats-cluster-bench-"))
    cluster = start_nats_cluster(root, name="bench-sync")
    try:
        return asyncio.run(measure(cluster.url, n, replicas=3))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def describe(label: str, p: Publishing, n: int) -> str:
    return (f"{label:<24} sequential {p.sequential:7.0f}/s  {CONCURRENCY} in flight "
            f"{p.concurrent:7.0f}/s  {SATURATING} in flight {p.saturating:7.0f}/s  (N={n})")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(describe("R1, sync_interval=always", run("always", n), n))
    print(describe("R3, sync_interval=always", run_cluster(n), n))
    print(describe("R1, sync_interval=2m", run("2m", n), n))


if __name__ == "__main__":
    main()
