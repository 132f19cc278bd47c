"""NATS: each service's user publishes only its own subjects; tried against a real server."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import nats
import nats.errors
import pytest

from services.cli.natsserver import with_credentials
from services.common.bus import Bus
from tests import factories
from tests.faults.harness import NATS_PASSWORDS, ServiceStack
from tests.helpers import eventually, publish_once


async def connect(stack: ServiceStack, user: str, errors: list[str]) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    url = with_credentials(stack.servers.nats_url, user, NATS_PASSWORDS[user])
    return await nats.connect(url, error_cb=on_error, allow_reconnect=False)


async def stream_has(stack: ServiceStack, stream: str, msg_id: str) -> bool:
    nc = await nats.connect(stack.servers.nats_admin_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            if (msg.headers or {}).get("Nats-Msg-Id") == msg_id:
                return True
        return False
    finally:
        await nc.close()


async def publish(stack: ServiceStack, user: str, subject: str) -> tuple[str, list[str], bool]:
    errors: list[str] = []
    msg_id, acked = await publish_once(await connect(stack, user, errors), subject, timeout_s=2,
                                       errors=errors)
    return msg_id, errors, acked


async def test_orders_may_not_publish_a_payment_event(stack: ServiceStack) -> None:
    msg_id, errors, acked = await publish(stack, "orders", "payments.payment.captured")
    assert not acked
    assert any("permissions violation" in e.lower() for e in errors), errors
    assert not await stream_has(stack, "PAYMENTS", msg_id)


@pytest.mark.parametrize(("user", "subject", "stream"), [
    ("orders", "orders.order.placed", "ORDERS"),
    ("payments", "payments.payment.captured", "PAYMENTS"),
    ("membership", "membership.member.registered", "MEMBERSHIP"),
])  # fmt: skip
async def test_a_service_publishes_its_own_subjects(
    stack: ServiceStack, user: str, subject: str, stream: str
) -> None:
    msg_id, errors, acked = await publish(stack, user, subject)
    assert acked and not errors, errors
    assert await stream_has(stack, stream, msg_id)


@pytest.mark.parametrize("subject", ["orders.order.placed", "membership.tier.changed"])
async def test_analytics_publishes_nothing(stack: ServiceStack, subject: str) -> None:
    _, errors, acked = await publish(stack, "analytics", subject)
    assert not acked and any("permissions violation" in e.lower() for e in errors), errors


async def test_a_service_may_not_subscribe_to_raw_subjects(stack: ServiceStack) -> None:
    errors: list[str] = []
    nc = await connect(stack, "payments", errors)
    try:
        await nc.subscribe("orders.>")
        await nc.flush()
        await eventually(lambda: _copy(errors), timeout_s=5, what="a permissions error")
    finally:
        await nc.close()
    assert any("permissions violation for subscription" in e.lower() for e in errors), errors


async def _copy(errors: list[str]) -> list[str]:
    return list(errors)


async def test_a_wrong_password_is_refused(stack: ServiceStack) -> None:
    """Spoken over a raw socket: nats-py leaks its transport when a connect is refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.servers.nats_port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        connect = b'{"user":"orders","pass":"not-the-password","verbose":false}'
        writer.write(b"CONNECT " + connect + b"\r\nPING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"-ERR") and b"Authorization Violation" in answer, answer


async def test_a_service_user_manages_its_streams(stack: ServiceStack) -> None:
    """The JetStream API stays open: every service creates the streams at start."""
    url = with_credentials(stack.servers.nats_url, "analytics", NATS_PASSWORDS["analytics"])
    bus = await Bus.connect(url, name="security-test")
    try:
        await bus.ensure_streams()
    finally:
        await bus.close()


async def test_orders_user_consumes_membership_events(
    stack: ServiceStack, http: httpx.AsyncClient
) -> None:
    """Orders' durable on MEMBERSHIP is created through the JetStream API and delivers to its
    _INBOX, so the orders user needs no subscribe permission on membership.>: a registration
    reaches orders' tier projection."""
    created = await http.post(f"{stack.url('membership')}/v1/members", json={
        "email": f"tier-{uuid.uuid4().hex[:12]}@example.com", "password": factories.PASSWORD,
        "name": "Tier Member", "birth_year": 1990, "region": "CN-SH"})
    assert created.status_code == 201, created.text
    member_id = uuid.UUID(created.json()["id"])

    async def known() -> list[str]:
        rows = await stack.db.sql(
            "SELECT tier FROM orders.member_tiers WHERE member_id = $1", member_id)
        return [r["tier"] for r in rows]

    assert await eventually(known, what="the registration in orders' projection") == ["BRONZE"]
