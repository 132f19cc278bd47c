"""`marketplace analytics rebuild` gives exactly the live numbers, while the live consumers
go on applying events."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg

from services.analytics import rebuild
from services.analytics.domain.window import minute_of
from services.cli import analytics_rebuild
from services.common.bus import Bus
from tests.integration.analytics.conftest import Analytics, Published
from tests.integration.analytics.factories import confirmation, money, placed_order, refund
from tests.integration.analytics.scenario import Scenario, dump, generate

STREAMS = {"orders": "analytics-orders", "payments": "analytics-payments",
           "membership": "analytics-membership"}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def publish_all(analytics: Analytics, scenario: Scenario) -> list[Published]:
    """Publish concurrently in chunks (so orders interleave), plus every 20th event again."""
    sent: list[Published] = []
    chunk = 200
    for i in range(0, len(scenario.events), chunk):
        sent += await asyncio.gather(*(
            analytics.publish(e.subject, e.message, event_id=e.event_id)
            for e in scenario.events[i:i + chunk]
        ))
    await asyncio.gather(*(analytics.redeliver(p) for p in sent[::20]))
    return sent


async def settle(analytics: Analytics, *batches: list[Published]) -> None:
    """Wait until each consumer has handled every event of `publish_all`'s batches."""
    copies: Counter[str] = Counter()
    for sent in batches:
        copies += Counter(p.subject.split(".", 1)[0] for p in sent)
        copies += Counter(p.subject.split(".", 1)[0] for p in sent[::20])
    for prefix, consumer in STREAMS.items():
        await analytics.settled(consumer, copies[prefix])


async def merchant_gmv(conn: asyncpg.Connection) -> Counter[str]:
    rows = await conn.fetch("SELECT merchant_id::text AS m, sum(gmv) AS gmv "
                            "FROM analytics.order_lines GROUP BY 1")
    return Counter({r["m"]: r["gmv"] for r in rows})


async def test_rebuild_after_1000_random_orders_equals_live_and_the_sums(
    analytics: Analytics, nats_url: str
) -> None:
    start = minute_of(datetime.now(UTC)) - timedelta(hours=3)
    scenario = generate(1_000, start=start)
    sent = await publish_all(analytics, scenario)
    await settle(analytics, sent)
    window = {"from": iso(start - timedelta(minutes=1)), "to": iso(start + timedelta(hours=2))}
    admin = await asyncpg.connect(analytics.db.admin_dsn)
    try:
        live = await dump(admin)
        live_gmv = await analytics.report("/v1/analytics/gmv", **window)
        live_overview = await analytics.report("/v1/analytics/overview", **window)
        # Spoil the live projection: only a real rebuild puts the right number back.
        await admin.execute("UPDATE analytics.gmv_minute SET gmv = gmv + 1")

        code = await asyncio.to_thread(analytics_rebuild.main, [
            "--database-url", analytics.db.dsn("analytics"), "--nats-url", nats_url,
            "--admin-dsn", analytics.db.admin_dsn, "--no-progress",
        ])

        assert code == 0
        assert await dump(admin) == live
        assert await analytics.report("/v1/analytics/gmv", **window) == live_gmv
        assert await merchant_gmv(admin) == scenario.by_merchant
        # Partly refunded orders stay CONFIRMED; those refunded in full are REFUNDED.
        statuses = await admin.fetch("SELECT status, count(*) AS n FROM analytics.orders_fact "
                                     "GROUP BY status")
        assert Counter({r["status"]: r["n"] for r in statuses}) == scenario.statuses
    finally:
        await admin.close()
    # The independent sums: what the generator itself added up.
    assert (live_gmv["gmv"], live_gmv["refunds"], live_gmv["orders"]) == (
        money(scenario.gmv), money(scenario.refunds), scenario.orders,
    )
    assert live_overview["payment_attempts"] == scenario.payments
    assert live_overview["payment_success_rate"] == scenario.payments_ok / scenario.payments
    assert sum(p["gmv"]["amount"] for p in live_overview["series"]) == scenario.gmv


async def test_after_a_rebuild_live_consumers_apply_each_later_event_once(
    analytics: Analytics, nats_url: str
) -> None:
    at = minute_of(datetime.now(UTC)) - timedelta(minutes=5)
    first = placed_order(total=10_000)
    await analytics.publish("orders.order.confirmed", confirmation(first, at=at))
    # A refund adds up event by event: only the inbox rows keep a copy from counting twice.
    old = await analytics.publish("orders.order.refunded", refund(first.order_id, 1_000, at))
    await analytics.settled("analytics-orders", 2)
    code = await asyncio.to_thread(analytics_rebuild.main, [
        "--database-url", analytics.db.dsn("analytics"), "--nats-url", nats_url,
        "--admin-dsn", analytics.db.admin_dsn, "--no-progress",
    ])
    assert code == 0

    later = placed_order(total=2_500)
    await analytics.publish("orders.order.confirmed", confirmation(later, at=at))
    await analytics.redeliver(old)  # already applied by the rebuild: must stay once
    await analytics.settled("analytics-orders", 4)

    body = await analytics.report("/v1/analytics/gmv")
    assert (body["gmv"], body["refunds"], body["orders"]) == (money(12_500), money(1_000), 2)


async def indexes_and_grants(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    """The live tables' index names and definitions and who may do what with each table."""
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'analytics' "
        "AND tablename = ANY($1::text[])", list(rebuild.SWAPPED))
    grants = await conn.fetch(
        "SELECT c.relname, a.grantee::regrole::text, a.privilege_type "
        "FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relnamespace = 'analytics'::regnamespace AND c.relname = ANY($1::text[])",
        list(rebuild.SWAPPED))
    return sorted(tuple(r.values()) for r in [*indexes, *grants])


async def test_live_consumers_go_on_during_a_rebuild_whose_result_equals_the_live_one(
    analytics: Analytics, nats_url: str
) -> None:
    start = minute_of(datetime.now(UTC)) - timedelta(hours=3)
    window = {"from": iso(start - timedelta(minutes=1)), "to": iso(start + timedelta(hours=2))}
    before, during = generate(300, start=start), generate(300, start=start, seed=12)
    sent_before = await publish_all(analytics, before)
    await settle(analytics, sent_before)
    admin = await asyncpg.connect(analytics.db.admin_dsn)
    shape = await indexes_and_grants(admin)
    paused, resume = threading.Event(), threading.Event()

    def progress(stream: str, done: int, total: int) -> None:
        # Halfway through the first stream's replay, the rebuild waits here (its thread
        # blocked, no lock held) while the test publishes and the live consumers apply.
        if 0 < done < total and not paused.is_set():
            paused.set()
            assert resume.wait(60), "the test never let the rebuild go on"

    async def rebuild_in_its_thread() -> rebuild.Rebuilt:
        bus = await Bus.connect(nats_url, name="analytics-rebuild-test")
        try:
            return await rebuild.rebuild(analytics.db.dsn("analytics"), bus.js,
                                         progress=progress, batch=100)
        finally:
            await bus.close()

    running = asyncio.create_task(asyncio.to_thread(asyncio.run, rebuild_in_its_thread()))
    try:
        assert await asyncio.to_thread(paused.wait, 60), "the rebuild never got under way"
        sent_during = await publish_all(analytics, during)
        await settle(analytics, sent_before, sent_during)  # applied live, mid-rebuild
        live = await dump(admin)
        live_gmv = await analytics.report("/v1/analytics/gmv", **window)
    finally:
        resume.set()
    done = await running

    assert sum(done.replayed.values()) >= len(sent_before) + len(sent_during)
    assert await dump(admin) == live
    assert await analytics.report("/v1/analytics/gmv", **window) == live_gmv
    assert live_gmv["gmv"] == money(before.gmv + during.gmv)
    # The same indexes under the same names, and the auditor still reads every table.
    assert await indexes_and_grants(admin) == shape
    assert ("orders_fact", "auditor", "SELECT") in shape
    counted = await analytics.db.sql("SELECT count(*) AS n FROM analytics.orders_fact")
    assert counted[0]["n"] == len(live["orders_fact"])
    await admin.close()

    # The swapped-in inbox: an event the rebuild applied stays applied once.
    await analytics.redeliver(next(p for p in sent_during if p.subject.startswith("orders.")))
    after = placed_order(total=700)
    await analytics.publish("orders.order.confirmed", confirmation(after, at=start))
    await analytics.settled("analytics-orders", analytics_copies(sent_before, sent_during) + 2)
    body = await analytics.report("/v1/analytics/gmv", **window)
    assert body["gmv"] == money(before.gmv + during.gmv + 700)


def analytics_copies(*batches: list[Published]) -> int:
    """Orders events among `publish_all`'s batches, redeliveries included."""
    return sum(sum(p.subject.startswith("orders.") for p in [*sent, *sent[::20]])
               for sent in batches)
