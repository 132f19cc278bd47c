"""The production topology (two replicas of each service behind HAProxy, a three-node NATS
cluster with R3 streams, PgBouncer; tests/e2e/conftest.py's `topology` stack, wired by
services/cli/topology.py as `marketplace up --replicas 2 --nats-cluster --pooler` is) under a
steady checkout burst, while in turn: each service's relay-leading replica is killed -9 and
supervised back, the ORDERS stream leader node is killed -9 and started again, PgBouncer is
killed -9 and started again on its port. Afterwards nothing is lost, stuck or doubled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping

import httpx
import pytest

from services.cli.balancer import replica_states
from services.cli.stack import repo_root
from services.cli.supervisor import supervise
from tests import factories
from tests.e2e.conftest import Stack, running_stack
from tests.faults.burst import assert_applied_once, assert_outboxes_drained, assert_settled, members
from tests.faults.harness import Catalog, make_catalog
from tests.faults.storefront import SteadyResult, steady_burst
from tests.helpers import eventually
from tests.topology.drills import (
    SERVICES,
    Drill,
    LeaderWatch,
    kill_replica,
    kill_stream_leader,
    restart_pooler,
)

BUYERS = 16
WARM_UP_S = 5.0
BETWEEN_S = 1.0  # of burst between two drills (each drill waits until its fault is over)
NATS_DOWN_S = 5.0
POOLER_DOWN_S = 2.0
PUBLISHING = ("orders", "payments")  # each checkout writes events to these outboxes


@pytest.fixture(scope="module")
async def topology(
    request: pytest.FixtureRequest, pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with running_stack(request, "topology", pg_admin_dsn, tmp_path_factory) as stack:
        yield stack


@pytest.fixture(scope="module")
async def catalog(topology: Stack) -> Catalog:
    return await make_catalog(topology)


@pytest.fixture(scope="module")
async def buyers(topology: Stack) -> list[factories.SignedIn]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return await members(client, topology, count=BUYERS)


async def _drills(stack: Stack, watch: LeaderWatch, result: SteadyResult) -> list[Drill]:
    """The faults, one after another, each waited out before the next; the burst goes on
    until a checkout sent after the last one is over has been confirmed."""
    assert stack.topology.cluster is not None
    drills = []
    for service in SERVICES:
        drills.append(await kill_replica(stack, watch, service))
        await asyncio.sleep(BETWEEN_S)
    drills.append(await kill_stream_leader(stack.topology.cluster, NATS_DOWN_S))
    await asyncio.sleep(BETWEEN_S)
    pooler = await restart_pooler(stack, POOLER_DOWN_S)
    drills.append(pooler)
    back = pooler.at + pooler.timings["pooler_listening_again"]

    async def served_since_back() -> float | None:
        return result.first_accepted_after(back)

    await eventually(served_since_back, until=lambda t: t is not None, timeout_s=60,
                     what="a checkout confirmed after PgBouncer is back")  # fmt: skip
    return drills


async def _rotation(stack: Stack) -> Mapping[str, str]:
    return await asyncio.to_thread(replica_states, stack.topology.root / "haproxy")


def _audit(stack: Stack) -> subprocess.CompletedProcess[str]:
    """`marketplace audit` as an operator runs it, as the read-only auditor."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "--dsn", stack.db.auditor_dsn,
         "--settle", "60"],
        cwd=repo_root(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


async def _published_after(stack: Stack, drill: Drill, schema: str) -> tuple[int, int]:
    """Outbox rows of `schema` created after the drill began: (all, still unpublished)."""
    rows = await stack.db.sql(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE published_at IS NULL) AS pending "
        f"FROM {schema}.outbox WHERE created_at > $1", drill.wall)  # fmt: skip
    return int(rows[0]["n"]), int(rows[0]["pending"])


def _report(result: SteadyResult, drills: list[Drill], final: dict[str, int]) -> str:
    lines = [
        f"offered={result.offered} answers={dict(result.answers)} "
        f"accepted={len(result.accepted)} final={final} retries={dict(result.retries)} "
        f"unanswered={len(result.unanswered)}",
    ]
    ends = [d.at for d in drills[1:]] + [float("inf")]
    for drill, end in zip(drills, ends, strict=True):
        first = result.first_accepted_after(drill.at)
        lines.append(f"{drill.line()} first_201_sent_after={first and round(first, 2)}s "
                     f"other_answers_until_next={dict(result.outcomes_between(drill.at, end))}")
    return "\n".join(lines)


@pytest.mark.timeout(900)
async def test_checkout_burst_survives_replica_nats_leader_and_pooler_kills(
    topology: Stack, catalog: Catalog, buyers: list[factories.SignedIn]
) -> None:
    stack = topology
    assert stack.topology.cluster is not None
    stop, done = asyncio.Event(), asyncio.Event()
    watch = LeaderWatch(stack)
    result = SteadyResult()
    limits = httpx.Limits(max_connections=BUYERS * 2)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        supervisor = asyncio.create_task(supervise(stack.topology.children, done))
        watcher = asyncio.create_task(watch.run(done))
        burst = asyncio.create_task(steady_burst(http, stack, buyers, catalog, stop=stop,
                                                 into=result))  # fmt: skip
        try:
            await asyncio.sleep(WARM_UP_S)
            drills = await _drills(stack, watch, result)
        finally:
            stop.set()
            await burst
            done.set()
            await asyncio.gather(supervisor, watcher)

    rows = await stack.db.sql("SELECT status, count(*) AS n FROM orders.orders "
                              "WHERE id = ANY($1::uuid[]) GROUP BY status", list(result.accepted))
    final = {r["status"]: int(r["n"]) for r in rows}
    print("\n" + _report(result, drills, final))

    # Every checkout was answered (resent with its key through every fault), never a 500.
    assert not result.unanswered, result.unanswered[:5]
    assert set(result.answers) <= {"201", "202"}, result.answers
    assert len(result.accepted) == result.offered, "each answer names its own order"
    await assert_settled(stack, result.accepted)  # none PENDING, answers kept
    orders_drill = drills[0]
    pending_at_kill = orders_drill.notes["pending_at_kill"]
    assert isinstance(pending_at_kill, list)
    rows = await stack.db.sql(
        "SELECT status, recovery_attempts > 0 AS recovered, count(*) AS n FROM orders.orders "
        "WHERE id = ANY($1::uuid[]) GROUP BY 1, 2", pending_at_kill)  # fmt: skip
    at_kill = {(r["status"], r["recovered"]): int(r["n"]) for r in rows}
    print(f"orders PENDING when {orders_drill.what}: (status, by recovery) -> {at_kill}")
    assert {status for status, _ in at_kill} <= {"CONFIRMED", "CANCELLED"}, at_kill
    await assert_outboxes_drained(stack)
    # Every replica serves again: none is left out of the balancer by a fault it got over.
    await eventually(lambda: _rotation(stack), until=lambda s: set(s.values()) == {"UP"},
                     timeout_s=60, what="every replica in HAProxy's rotation")  # fmt: skip
    for drill, schema in zip(drills, SERVICES, strict=False):
        if schema in PUBLISHING:  # the relay's new leader published what came after the kill
            created, pending = await _published_after(stack, drill, schema)
            assert created > 0 and pending == 0, (schema, created, pending)
    applied = await assert_applied_once(stack.db, stack.topology.cluster.url)
    print(f"events applied per consumer (expected, in inbox, differing): {applied}")
    audit = await asyncio.to_thread(_audit, stack)
    print(audit.stdout)
    assert audit.returncode == 0 and "audit clean" in audit.stdout, audit.stdout + audit.stderr
    print(f"relay leadership sampled {watch.samples} times, overlaps: {watch.overlaps}")
    assert not watch.overlaps, f"two relay leaders of one schema at once: {watch.overlaps}"
    assert watch.samples > 0 and all(watch.leaders.values()), watch.leaders
