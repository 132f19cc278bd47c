"""Infrastructure outages under load: NATS down for 30 s, a Postgres restart, a slow processor."""

from __future__ import annotations

import asyncio

import httpx
import nats

from tests import factories
from tests.faults.burst import (
    assert_audit_clean,
    assert_outboxes_drained,
    assert_settled,
    checkout_burst,
)
from tests.faults.harness import Catalog, ServiceStack
from tests.helpers import eventually

NATS_OUTAGE_S = 30.0  # the figure: long enough for every outbox to back up
PG_OUTAGE_S = 3.0
SERVICES = ("orders", "payments", "membership", "analytics")


async def stream_messages(stack: ServiceStack) -> dict[str, int]:
    nc = await nats.connect(stack.servers.nats_admin_url)
    try:
        js = nc.jetstream()
        return {s.config.name: s.state.messages for s in await js.streams_info()}
    finally:
        await nc.close()


async def outbox_events(stack: ServiceStack) -> dict[str, int]:
    counts = {}
    for schema, stream in (("orders", "ORDERS"), ("payments", "PAYMENTS"),
                           ("membership", "MEMBERSHIP")):  # fmt: skip
        rows = await stack.sql(f"SELECT count(*) AS n FROM {schema}.outbox")
        counts[stream] = int(rows[0]["n"])
    return counts


async def test_nats_outage_loses_nothing_and_applies_nothing_twice(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn],
) -> None:  # fmt: skip
    pids = {name: stack.pid(name) for name in SERVICES}
    await assert_outboxes_drained(stack)
    streams_before, outboxes_before = await stream_messages(stack), await outbox_events(stack)
    await asyncio.to_thread(stack.servers.stop_nats)
    during = await checkout_burst(http, stack, buyers, catalog, total=60)
    await asyncio.sleep(NATS_OUTAGE_S)  # the outage itself, not an assertion
    backlog = await stack.sql("SELECT count(*) AS n FROM orders.outbox WHERE published_at IS NULL")
    await asyncio.to_thread(stack.servers.start_nats)

    assert during.statuses["201"] > 0, during.statuses  # checkout needs no broker
    assert backlog[0]["n"] > 0, "events waited in the outbox while NATS was down"
    await assert_outboxes_drained(stack)

    # Every event written meanwhile reaches its stream exactly once (Nats-Msg-Id
    # de-duplication). Consumers still catching up write new events (membership's points
    # after orders' confirmations), so the two sides are compared once they settle: a lost
    # event would never appear, a duplicate would overshoot.
    async def gaps() -> dict[str, tuple[int, int]]:
        outboxes = await outbox_events(stack)  # before the streams: rows only ever grow
        streams = await stream_messages(stack)
        return {s: (streams[s] - streams_before[s], n - outboxes_before[s])
                for s, n in outboxes.items()}

    settled = await eventually(gaps, until=lambda g: all(a == b for a, b in g.values()),
                               timeout_s=60, what="every outbox event in its stream once")
    assert all(published == written for published, written in settled.values()), settled
    await assert_outboxes_drained(stack)
    await assert_settled(stack, during.accepted)
    await assert_audit_clean(stack)
    assert {name: stack.pid(name) for name in SERVICES} == pids, "no service restarted"


async def test_postgres_restart_under_load_services_reconnect_on_their_own(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn],
) -> None:  # fmt: skip
    pids = {name: stack.pid(name) for name in SERVICES}
    halfway = asyncio.Event()
    burst = asyncio.create_task(checkout_burst(http, stack, buyers, catalog, halfway=halfway))
    await halfway.wait()
    await asyncio.to_thread(stack.servers.stop_pg)
    await asyncio.sleep(PG_OUTAGE_S)  # the outage itself, not an assertion
    await asyncio.to_thread(stack.servers.start_pg)
    result = await burst

    for name in SERVICES:
        await eventually(
            lambda n=name: _ready(http, stack, n), timeout_s=60, what=f"{name} ready again"
        )
    after = await checkout_burst(http, stack, buyers, catalog, total=20)
    assert after.statuses == {"201": 20}, after.statuses
    assert {name: stack.pid(name) for name in SERVICES} == pids, "no service restarted"
    await assert_settled(stack, result.accepted | after.accepted)
    await assert_outboxes_drained(stack)
    await assert_audit_clean(stack)


async def _ready(http: httpx.AsyncClient, stack: ServiceStack, name: str) -> bool:
    try:
        return (await http.get(f"{stack.url(name)}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _breaker_open(http: httpx.AsyncClient, stack: ServiceStack) -> bool:
    metrics = (await http.get(f"{stack.url('payments')}/metrics")).text
    return "marketplace_payments_processor_breaker_open 1.0" in metrics


async def test_slow_processor_opens_the_breaker_and_it_closes_on_recovery(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn],
) -> None:  # fmt: skip
    """Slower than the processor timeout: once `breaker_minimum_calls` checkouts have timed
    out (and nothing answered) the breaker opens and checkouts answer 202 PENDING at once
    (the storefront polls the order); restarted with a healthy processor, payments closes
    it and the PENDING orders settle."""
    await stack.restart(
        "payments", PAYMENTS_PROCESSOR_LATENCY_MS="5000", PAYMENTS_BREAKER_MINIMUM_CALLS="3"
    )
    slow: dict[str, str] = {}

    async def slow_checkout_opens_breaker() -> bool:
        answer = await checkout_burst(http, stack, buyers[:1], catalog, total=1)
        assert set(answer.statuses) <= {"202", "429"}, answer.statuses
        slow.update(answer.accepted)
        return await _breaker_open(http, stack)

    await eventually(slow_checkout_opens_breaker, timeout_s=60, what="the breaker open")

    buyer = buyers[3]
    loop = asyncio.get_running_loop()
    started = loop.time()
    fast = await http.post(
        f"{stack.url('orders')}/v1/orders", json=factories.order_body(catalog.sku_id),
        headers=buyer.auth | factories.idem(),
    )  # fmt: skip
    # Answered without waiting on the processor (whose timeout alone is 2 s).
    assert fast.status_code == 202 and loop.time() - started < 2.0, fast.text
    assert fast.json()["status"] == "PENDING"

    await stack.restart("payments")
    healthy: dict[str, str] = {}

    async def confirmed_again() -> bool:  # orders' channel reconnects to the new payments
        answer = await checkout_burst(http, stack, buyers[4:5], catalog, total=1)
        healthy.update(answer.accepted)
        return answer.statuses == {"201": 1}

    await eventually(confirmed_again, timeout_s=30, what="checkouts confirmed again")
    assert not await _breaker_open(http, stack)
    accepted = slow | healthy | {fast.json()["id"]: "PENDING"}
    await assert_settled(stack, accepted)
    await assert_audit_clean(stack)
