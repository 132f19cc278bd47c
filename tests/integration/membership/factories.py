"""Test data for membership: members, tokens and order events."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from google.protobuf.message import Message
from marketplace.common.v1 import money_pb2
from marketplace.events.v1 import events_pb2 as ev
from marketplace.membership.v1 import membership_pb2 as pb
from nats.js.errors import NotFoundError

from services.common.bus import Bus
from services.common.events import SUBJECTS, envelope_headers
from tests.helpers import eventually

PASSWORD = "Correct-Horse-42"


def member_form(**changes: Any) -> dict[str, Any]:
    form = {
        "email": f"m{uuid.uuid4().hex[:12]}@example.cn",
        "password": PASSWORD,
        "name": "Wang Fang",
        "birth_year": 1992,
        "region": "CN-ZJ",
        "gender": "female",
    }
    return form | changes


async def register(http: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await http.post("/v1/members", json=member_form(**changes))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def sign_in(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await http.post("/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def order_confirmed(
    member_id: str, total_fen: int, order_id: str | None = None
) -> ev.OrderConfirmed:
    return ev.OrderConfirmed(
        order_id=order_id or str(uuid.uuid4()), member_id=member_id,
        total=money_pb2.Money(amount=total_fen, currency="CNY"), payment_id=str(uuid.uuid4()),
    )


def order_refunded(
    member_id: str, order_id: str, refunded_fen: int, refunded_total: int | None = None
) -> ev.OrderRefunded:
    """One refund; `refunded_total` (the running total) as orders sends it since partial
    refunds, None for the older events that carried only the amount."""
    message = ev.OrderRefunded(
        order_id=order_id, member_id=member_id,
        refunded=money_pb2.Money(amount=refunded_fen, currency="CNY"),
        payment_id=str(uuid.uuid4()),
    )
    if refunded_total is not None:
        message.refunded_total.CopyFrom(money_pb2.Money(amount=refunded_total, currency="CNY"))
    return message


async def publish(
    bus: Bus, subject: str, message: Message, *, event_id: uuid.UUID | None = None,
    msg_id: str | None = None,
) -> None:
    """Publish as the orders outbox relay would; `msg_id` overrides Nats-Msg-Id only."""
    headers = envelope_headers(subject, event_id or uuid.uuid4(), "orders")
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    await bus.publish(subject, message.SerializeToString(), headers)


async def stream_events(bus: Bus, subject: str) -> list[tuple[dict[str, str], Any]]:
    """Every event on `subject` in the MEMBERSHIP stream so far, decoded, oldest first."""
    found: list[tuple[dict[str, str], Any]] = []
    seq = 1
    while True:
        try:
            raw = await bus.js.get_msg("MEMBERSHIP", seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        message = SUBJECTS[subject]()
        message.ParseFromString(raw.data or b"")
        found.append((dict(raw.headers or {}), message))
        seq = int(raw.seq or 0) + 1


async def credit(running: Any, member_id: str, points: int) -> None:
    """Give a BRONZE member `points` the way production does: a confirmed ¥`points` order."""
    before = (await running.stub.GetMember(pb.GetMemberRequest(member_id=member_id))).points_balance
    await publish(running.bus, "orders.order.confirmed", order_confirmed(member_id, points * 100))

    async def balance() -> int:
        member = await running.stub.GetMember(pb.GetMemberRequest(member_id=member_id))
        return int(member.points_balance)

    await eventually(balance, until=lambda b: b == before + points, what="points credited")
