"""`marketplace up` as a user runs it, on a data directory and ports of its own: a service
killed with SIGKILL is started again while the others keep serving; Ctrl-C ends it all."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.cli.launcher import stop_launcher
from services.cli.procs import port_free
from services.cli.stack import DATA_DIR_ENV, DataPaths, read_state, repo_root, stop_stack
from services.cli.topology import stop_recorded
from tests import factories
from tests.helpers import eventually
from tests.infra import TEMP_PREFIX, free_port

SERVICES = ("orders", "payments", "membership", "analytics")
VICTIM = "payments"  # orders' checkouts go through it: the order below needs it back


@dataclass
class Up:
    """A running `marketplace up` and where it keeps its stack."""

    proc: subprocess.Popen[bytes]
    root: Path
    env: dict[str, str]
    port_base: int

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port_base + SERVICES.index(service)}"

    def state(self) -> dict[str, Any]:
        return read_state(DataPaths(self.root))

    def pids(self) -> dict[str, int]:
        assert self.proc.poll() is None, (self.root / "up.log").read_text()[-3000:]
        return dict(self.state().get("services", {}))

    async def output(self) -> str:
        assert self.proc.poll() is None, (self.root / "up.log").read_text()[-3000:]
        return (self.root / "up.log").read_text()

    def marketplace(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args], env=self.env, cwd=repo_root(),
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (below the ephemeral range)."""
    while True:
        first = free_port()
        if all(port_free(first + i) for i in range(1, count)):
            return first


@contextmanager
def started_up(
    request: pytest.FixtureRequest, *flags: str, http_ports: int = 4, grpc_ports: int = 2
) -> Iterator[Up]:
    """`marketplace up <flags>` on a data directory of its own and on free port blocks;
    afterwards whatever it left running is stopped and its directory deleted."""
    request.getfixturevalue("_embedded_servers_guard")  # reaps what a killed run left
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}up-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OTEL_") and k not in ("DATABASE_URL", "NATS_URL")}
    env |= {DATA_DIR_ENV: str(root), "ORDERS_RECOVERY_INTERVAL_S": "1",
            "PYTHONUNBUFFERED": "1"}
    port_base = consecutive_free_ports(http_ports)
    grpc_base = consecutive_free_ports(grpc_ports)
    with (root / "up.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--port-base", str(port_base),
             "--grpc-port-base", str(grpc_base), *flags],
            env=env, cwd=repo_root(), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield Up(proc, root, env, port_base)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(120)
        paths = DataPaths(root)
        with suppress(Exception):
            stop_launcher(paths, read_state(paths))
        with suppress(Exception):
            stop_recorded(read_state(paths))  # haproxy, pgbouncer
        with suppress(Exception):
            stop_stack(paths)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def up(request: pytest.FixtureRequest) -> Iterator[Up]:
    with started_up(request) as running:
        yield running


async def ready(http: httpx.AsyncClient, up: Up, service: str) -> bool:
    with suppress(httpx.HTTPError):
        return (await http.get(f"{up.url(service)}/readyz")).status_code == 200
    return False


def listens_on(pid: int, port: int) -> bool:
    with suppress(psutil.Error):
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.Process(pid).net_connections("tcp"))  # fmt: skip
    return False


def alive(proc: psutil.Process) -> bool:
    with suppress(psutil.Error):
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    return False


async def confirmed_order(http: httpx.AsyncClient, up: Up) -> dict[str, Any]:
    """A checkout, confirmed at once or by the recovery loop (orders may still be
    reconnecting to the restarted payments)."""
    buyer = await factories.member(http, up.url("membership"))
    sku = await factories.sku_in_stock(http, up.url("orders"))
    placed = await http.post(f"{up.url('orders')}/v1/orders", json=factories.order_body(
        sku["id"]), headers=buyer.auth | factories.idem())
    assert placed.status_code in (201, 202), placed.text

    async def status() -> str:
        url = f"{up.url('orders')}/v1/orders/{placed.json()['id']}"
        return str((await http.get(url, headers=buyer.auth)).json()["status"])

    await eventually(status, until=lambda s: s == "CONFIRMED", timeout_s=60, what="confirmed")
    return dict(placed.json())


async def serving(http: httpx.AsyncClient, up: Up) -> dict[str, psutil.Process]:
    """Wait until `up` has started, seeded and supervises; its four service processes."""
    # The first run of a stack initialises Postgres: be patient.
    await eventually(up.output, until=lambda out: "marketplace is running" in out,
                     timeout_s=300, what="marketplace up serving")  # fmt: skip
    for name in SERVICES:
        await eventually(lambda n=name: ready(http, up, n), timeout_s=120, what=name)
    (up.root / "nats.pid").write_text(str(up.state()["nats"]["pid"]))  # for the reaper
    pids = up.pids()
    assert sorted(pids) == sorted(SERVICES)
    return {name: psutil.Process(pid) for name, pid in pids.items()}


@pytest.mark.e2e
async def test_up_restarts_a_killed_service_and_ctrl_c_stops_everything(up: Up) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        first = await serving(http, up)
        others = [name for name in SERVICES if name != VICTIM]
        os.kill(first[VICTIM].pid, signal.SIGKILL)

        async def replaced() -> int | None:
            for name in others:  # serving all along
                assert (await http.get(f"{up.url(name)}/healthz")).status_code == 200, name
            pid = up.pids().get(VICTIM)
            port = up.port_base + SERVICES.index(VICTIM)
            fresh = pid not in (None, first[VICTIM].pid) and listens_on(pid, port)
            return pid if fresh and await ready(http, up, VICTIM) else None

        new_pid = await eventually(replaced, timeout_s=120, what=f"{VICTIM} restarted")
        assert "killed by SIGKILL" in (up.root / "up.log").read_text()
        await confirmed_order(http, up)
        assert all(alive(first[name]) for name in others), "another service was restarted"
        assert {n: up.pids()[n] for n in others} == {n: first[n].pid for n in others}

    audit = await asyncio.to_thread(up.marketplace, "audit")
    assert audit.returncode == 0 and "audit clean" in audit.stdout, audit.stdout + audit.stderr

    state = up.state()
    started = [*psutil.Process(up.proc.pid).children(recursive=True),
               psutil.Process(state["postgres"]["pid"]), psutil.Process(state["nats"]["pid"])]
    assert new_pid in [p.pid for p in started]
    up.proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(up.proc.wait, 120) == 0

    async def left() -> list[int]:
        return [p.pid for p in started if alive(p)]

    await eventually(left, until=lambda pids: not pids, timeout_s=30, what="all stopped")
