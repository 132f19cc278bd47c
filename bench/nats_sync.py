"""What `sync_interval: always` costs: acked publishes/s against two embedded NATS servers.

    .venv/bin/python -m bench.nats_sync [N]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nats

from services.cli.natsserver import start_nats, stop_nats
from services.common.bus import Bus
from tests.infra import free_port

PAYLOAD = b"x" * 300  # about an OrderConfirmed with two lines
CONCURRENCY = 32  # in-flight publishes, as an outbox relay's parallel aggregates


async def measure(url: str, n: int) -> tuple[float, float]:
    """(sequential events/s, concurrent events/s), every publish awaited for its ack."""
    bus = Bus(await nats.connect(url))
    await bus.ensure_streams()

    async def one() -> None:
        await bus.publish("orders.order.confirmed", PAYLOAD, {"Nats-Msg-Id": str(uuid.uuid4())})

    started = time.perf_counter()
    for _ in range(n):
        await one()
    sequential = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(n // CONCURRENCY):
        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    concurrent = (n // CONCURRENCY * CONCURRENCY) / (time.perf_counter() - started)
    await bus.close()
    return sequential, concurrent


def run(sync_interval: str, n: int) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="nats-sync-bench-"))
    server = start_nats(root / "nats.conf", root / "js", log_file=root / "nats.log",
                        port=free_port(), monitor_port=free_port(), sync_interval=sync_interval)
    try:
        return asyncio.run(measure(server.url, n))
    finally:
        stop_nats(server.pid, root / "nats.conf")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for interval in ("always", "2m"):
        seq, conc = run(interval, n)
        print(f"sync_interval={interval:<7} sequential {seq:8.0f} ev/s   "
              f"{CONCURRENCY} in flight {conc:8.0f} ev/s   (N={n})")


if __name__ == "__main__":
    main()
