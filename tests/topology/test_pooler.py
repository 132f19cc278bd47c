"""The four services with their request traffic through a real PgBouncer in transaction
pooling and their sessions (outbox relay, migrations) direct to Postgres; PgBouncer
killed and started again under load."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import psutil
import pytest

from services.cli.launcher import START_GROUPS
from services.cli.pooler import Pooler, service_db_env, start_pgbouncer, stop_pgbouncer
from services.common.runtime import SESSIONS_PER_PROCESS
from tests import factories
from tests.faults.burst import (
    assert_audit_clean,
    assert_outboxes_drained,
    assert_settled,
    checkout_burst,
    members,
)
from tests.faults.harness import SERVICES, Catalog, ServiceStack, make_catalog, service_stack
from tests.helpers import eventually
from tests.infra import TEST_PASSWORDS, free_port

pytestmark = pytest.mark.topology
PROBLEM_JSON = "application/problem+json"


@dataclass
class Pooled:
    stack: ServiceStack
    pooler: Pooler

    def restart_pooler(self) -> None:
        """Start PgBouncer again on the port it had, from the same directory."""
        self.pooler = start_pgbouncer(
            self.pooler.data_dir, listen_port=self.pooler.port, pg_host="127.0.0.1",
            pg_port=self.stack.servers.pg_port, users=TEST_PASSWORDS,
        )  # fmt: skip


@pytest.fixture(scope="module")
async def pooled(request: pytest.FixtureRequest) -> AsyncIterator[Pooled]:
    """The fault stack, its services restarted onto the pooler (two DSNs each)."""
    request.getfixturevalue("_embedded_servers_guard")
    async with service_stack("pooler") as stack:
        pooler = await asyncio.to_thread(
            start_pgbouncer, stack.servers.root / "pgbouncer", listen_port=free_port(),
            pg_host="127.0.0.1", pg_port=stack.servers.pg_port, users=TEST_PASSWORDS,
        )  # fmt: skip
        holder = Pooled(stack, pooler)
        try:
            for name in SERVICES:
                direct = stack.db.dsn(name)
                stack.env[name] |= service_db_env(
                    name, direct_dsn=direct, pooled_dsn=pooler.dsn(direct)
                )
            for group in START_GROUPS:
                await asyncio.gather(*(stack.restart(name) for name in group))
            yield holder
        finally:
            stop_pgbouncer(holder.pooler)


@pytest.fixture(scope="module")
async def catalog(pooled: Pooled) -> Catalog:
    return await make_catalog(pooled.stack)


@pytest.fixture(scope="module")
async def buyers(pooled: Pooled) -> list[factories.SignedIn]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return await members(client, pooled.stack, count=10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=50)) as c:
        yield c


async def test_a_pooled_connection_sees_only_its_schema(pooled: Pooled) -> None:
    """PgBouncer refuses search_path as a startup parameter: the role carries it."""
    stack = pooled.stack
    conn = await asyncpg.connect(
        pooled.pooler.dsn(stack.db.dsn("orders")), statement_cache_size=0
    )
    try:
        assert await conn.fetchval("SELECT current_setting('search_path')") == "orders"
        assert await conn.fetchval("SELECT count(*) FROM outbox") >= 0  # unqualified
    finally:
        await conn.close()


def _peers(pid: int) -> Counter[int]:
    """How many TCP connections the process `pid` holds, by remote port."""
    return Counter(c.raddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr)


async def test_checkout_through_the_pooler_confirms_publishes_and_audits_clean(
    pooled: Pooled, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn],
) -> None:  # fmt: skip
    stack = pooled.stack
    result = await checkout_burst(http, stack, buyers, catalog, total=40)
    assert result.statuses == {"201": 40}, result.statuses

    for name in SERVICES:  # requests through the pooler; only the relay's session direct
        peers = _peers(stack.pid(name))
        assert peers[pooled.pooler.port] >= 1, (name, peers)
        assert 1 <= peers[stack.servers.pg_port] <= SESSIONS_PER_PROCESS, (name, peers)
    for buyer in buyers:  # membership applied orders' events: points for every buyer
        me = await eventually(
            lambda b=buyer: http.get(f"{stack.url('membership')}/v1/members/me", headers=b.auth),
            until=lambda r: r.status_code == 200 and r.json()["points_balance"] > 0,
            timeout_s=60, what="points from the confirmed orders",
        )  # fmt: skip
        assert me.json()["points_balance"] > 0
    await assert_settled(stack, result.accepted)
    await assert_outboxes_drained(stack)
    await assert_audit_clean(stack)  # analytics' GMV and membership's points agree


async def test_pooler_restart_under_load_fails_requests_cleanly_and_loses_nothing(
    pooled: Pooled, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn],
) -> None:  # fmt: skip
    stack = pooled.stack
    pids = {name: stack.pid(name) for name in SERVICES}
    halfway = asyncio.Event()
    burst = asyncio.create_task(checkout_burst(http, stack, buyers, catalog, halfway=halfway))
    await halfway.wait()
    pooled.pooler.proc.kill()  # a crash: no shutdown, every pooled connection cut
    pooled.pooler.proc.wait()
    # While it is down, a read is answered at once: a problem to retry, not a hang.
    down = await http.get(f"{stack.url('orders')}/v1/orders", headers=buyers[0].auth)
    await asyncio.to_thread(pooled.restart_pooler)
    result = await burst

    assert down.status_code == 503, down.text
    assert down.headers["content-type"].startswith(PROBLEM_JSON)
    assert down.headers["retry-after"] and down.json()["type"].endswith("/unavailable")
    # Every checkout was answered (a 503 was sent again after its Retry-After, with the
    # same key): none failed on the wire or with a 500. 202: the payment is in doubt and
    # recovery finishes it; 409: the key's first attempt placed its order before the
    # cut, so that attempt is still in flight (and recovery finishes it too).
    assert set(result.statuses) <= {"201", "202", "409"}, result.statuses
    after = await checkout_burst(http, stack, buyers, catalog, total=20)
    assert after.statuses == {"201": 20}, after.statuses
    assert {name: stack.pid(name) for name in SERVICES} == pids, "no service restarted"
    await assert_settled(stack, result.accepted | after.accepted)
    await assert_outboxes_drained(stack)
    await assert_audit_clean(stack)
