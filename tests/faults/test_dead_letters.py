"""A poison event on the real stack: dead-lettered after max_deliver, later events flow,
`marketplace dlq list|retry` shows and replays it; `outbox republish` sends nothing twice."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import orjson
import pytest

from services.cli import dlq, outbox_cli
from tests import factories
from tests.faults.burst import assert_audit_clean, assert_outboxes_drained, checkout_burst, members
from tests.faults.harness import Catalog, ServiceStack
from tests.faults.test_outages import stream_messages
from tests.helpers import eventually

# Analytics refuses this member's confirmations until the trigger goes: a handler bug.
POISON = """
CREATE FUNCTION analytics.poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'poisoned order %', NEW.order_id; END $$;
CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON analytics.orders_fact FOR EACH ROW
    WHEN (NEW.status = 'CONFIRMED' AND NEW.member_id = '{member}')
    EXECUTE FUNCTION analytics.poison();
"""
CURE = "DROP TRIGGER poison ON analytics.orders_fact; DROP FUNCTION analytics.poison();"


async def admin_sql(stack: ServiceStack, sql: str) -> None:
    conn = await asyncpg.connect(stack.db.admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def dsn_args(stack: ServiceStack) -> list[str]:
    args = []
    for name in ("orders", "payments", "membership", "analytics"):
        args += ["--dsn", f"{name}={stack.db.dsn(name)}"]
    return args


def cli_args(stack: ServiceStack) -> list[str]:
    return ["--nats-url", stack.servers.nats_admin_url, *dsn_args(stack)]


async def analytics_status(stack: ServiceStack, order_id: str) -> str | None:
    rows = await stack.sql(
        "SELECT status FROM analytics.orders_fact WHERE order_id = $1::uuid", order_id
    )
    return rows[0]["status"] if rows else None


async def test_poison_event_is_dead_lettered_then_retried_by_the_cli(
    stack: ServiceStack, http: httpx.AsyncClient, catalog: Catalog,
    buyers: list[factories.SignedIn], capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    [victim] = await members(http, stack, 1)
    await admin_sql(stack, POISON.format(member=victim.id))
    poisoned = await checkout_burst(http, stack, [victim], catalog, total=1)
    [poison_order] = poisoned.accepted

    async def dead_letters() -> list[dict]:
        capsys.readouterr()
        assert await asyncio.to_thread(dlq.main, [*cli_args(stack), "list", "--json"]) == 0
        return orjson.loads(capsys.readouterr().out)

    rows = await eventually(dead_letters, timeout_s=60, what="a dead letter")
    assert [(r["service"], r["subject"]) for r in rows] == [("analytics", "orders.order.confirmed")]
    assert "poisoned order" in rows[0]["error"]

    later = await checkout_burst(http, stack, buyers[:2], catalog, total=2)
    for order_id in later.accepted:  # later events keep flowing past the dead one
        await eventually(lambda o=order_id: analytics_status(stack, o),
                         until=lambda s: s == "CONFIRMED", what="a later order in analytics")
    assert await analytics_status(stack, poison_order) != "CONFIRMED"

    await admin_sql(stack, CURE)
    assert await asyncio.to_thread(dlq.main, [*cli_args(stack), "retry", rows[0]["ref"]]) == 0
    await eventually(lambda: analytics_status(stack, poison_order),
                     until=lambda s: s == "CONFIRMED", what="the retried event applied")
    assert await dead_letters() == []
    await assert_audit_clean(stack)


async def test_outbox_republish_sends_each_event_once(
    stack: ServiceStack, capsys: pytest.CaptureFixture[str]
) -> None:
    before = await stream_messages(stack)
    args = [*dsn_args(stack), "republish"]
    assert await asyncio.to_thread(outbox_cli.main, [*args, "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "orders" in out and "pending again" in out
    assert int(out.split("orders", 1)[1].split()[0]) > 0, out

    await assert_outboxes_drained(stack)
    assert await stream_messages(stack) == before, "JetStream dropped the republished copies"
    await assert_audit_clean(stack)
