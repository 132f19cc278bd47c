"""`marketplace up --replicas 2 --nats-cluster --pooler` as a user runs it: the README's
curl walkthrough through the balancer, an orders replica killed with SIGKILL while the
storefront keeps being served, and Ctrl-C ending every process it started."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.e2e.test_marketplace_up import Up, alive, listens_on, ready, started_up
from tests.helpers import eventually

pytestmark = pytest.mark.topology

SERVICES = ("orders", "payments", "membership", "analytics")
LABELS = sorted(f"{name}-{r}" for name in SERVICES for r in (1, 2))
VICTIM = "orders-1"
PASSWORD = "Correct-Horse-9"


@pytest.fixture
def up(request: pytest.FixtureRequest) -> Iterator[Up]:
    # Blocks: the balancer's four ports and two replicas' four each; two gRPC ports a set.
    with started_up(request, "--replicas", "2", "--nats-cluster", "--pooler",
                    http_ports=12, grpc_ports=6) as running:  # fmt: skip
        yield running


async def serving(http: httpx.AsyncClient, up: Up) -> dict[str, psutil.Process]:
    """Wait until `up` serves through the balancer; its eight service processes by label."""
    await eventually(up.output, until=lambda out: "marketplace is running" in out,
                     timeout_s=300, what="marketplace up serving")  # fmt: skip
    for name in SERVICES:
        await eventually(lambda n=name: ready(http, up, n), timeout_s=120, what=name)
    pids = up.pids()
    assert sorted(pids) == LABELS
    return {label: psutil.Process(pid) for label, pid in pids.items()}


async def walkthrough(http: httpx.AsyncClient, up: Up) -> None:
    """README's 'Place an order with curl', steps 1-4, on the balancer's ports."""
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    member = await http.post(f"{up.url('membership')}/v1/members", json={
        "email": email, "password": PASSWORD, "name": "Ada", "birth_year": 1990,
        "region": "CN-SH"})  # fmt: skip
    assert member.status_code == 201, member.text
    token = await http.post(f"{up.url('membership')}/v1/auth/token",
                            json={"email": email, "password": PASSWORD})  # fmt: skip
    assert token.status_code == 200, token.text
    auth = {"authorization": f"Bearer {token.json()['access_token']}"}
    products = await http.get(f"{up.url('orders')}/v1/products",
                              params={"q": "jacket", "in_stock": "true", "limit": 1})
    sku = products.json()["items"][0]["skus"][0]["id"]
    order = await http.post(
        f"{up.url('orders')}/v1/orders", headers=auth | {"idempotency-key": str(uuid.uuid4())},
        json={"items": [{"sku_id": sku, "quantity": 1}], "payment": {"token": "tok_visa"}})
    assert order.status_code == 201 and order.json()["status"] == "CONFIRMED", order.text

    await eventually(lambda: http.get(f"{up.url('membership')}/v1/members/me", headers=auth),
                     until=lambda r: r.json()["points_balance"] > 0,
                     timeout_s=60, what="points for the order")  # fmt: skip
    admin_key = json.loads((up.root / "secrets.json").read_text())["admin_api_key"]
    await eventually(lambda: http.get(f"{up.url('analytics')}/v1/analytics/gmv",
                                      headers={"x-admin-key": admin_key}),
                     until=lambda r: r.json()["orders"] >= 1,
                     timeout_s=60, what="the order in GMV")  # fmt: skip


@pytest.mark.e2e
async def test_topology_serves_the_walkthrough_survives_a_killed_replica_and_stops(
    up: Up,
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        first = await serving(http, up)
        await walkthrough(http, up)
        audit = await asyncio.to_thread(up.marketplace, "audit")
        assert audit.returncode == 0 and "audit clean" in audit.stdout, audit.stdout + audit.stderr
        state = up.state()
        assert len(state["nats_url"].split(",")) == 3, state["nats_url"]
        status = await asyncio.to_thread(up.marketplace, "stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr

        os.kill(first[VICTIM].pid, signal.SIGKILL)
        victim_port = up.port_base + 4  # replica 1's block follows the balancer's four ports
        answers: list[int] = []

        async def replaced() -> int | None:
            # The storefront is served through the balancer all along.
            answer = await http.get(f"{up.url('orders')}/v1/products", params={"limit": 1})
            answers.append(answer.status_code)
            assert answer.status_code == 200, answer.text
            pid = up.pids().get(VICTIM)
            fresh = pid not in (None, first[VICTIM].pid) and listens_on(pid, victim_port)
            return pid if fresh else None

        new_pid = await eventually(replaced, timeout_s=120, what=f"{VICTIM} restarted")
        assert answers and set(answers) == {200}
        assert "killed by SIGKILL" in (up.root / "up.log").read_text()
        others = [label for label in LABELS if label != VICTIM]
        assert {label: up.pids()[label] for label in others} == {
            label: first[label].pid for label in others}

    started = [*psutil.Process(up.proc.pid).children(recursive=True),
               psutil.Process(state["postgres"]["pid"]),
               *(psutil.Process(node["pid"]) for node in state["nats"]["nodes"])]
    names = {p.name() for p in started}
    assert {"haproxy", "pgbouncer", "nats-server"} <= names, names
    assert new_pid in [p.pid for p in started]
    up.proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(up.proc.wait, 120) == 0

    async def left() -> list[str]:
        return [f"{p.pid} {p.name()}" for p in started if alive(p)]

    await eventually(left, until=lambda pids: not pids, timeout_s=30, what="all stopped")
