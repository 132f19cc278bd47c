"""The event catalogue: subject → protobuf message, and the CloudEvents envelope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from marketplace.events.v1 import events_pb2 as ev

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"

# Every subject the system publishes, with the message its body carries.
SUBJECTS: dict[str, type[Message]] = {
    "orders.order.placed": ev.OrderPlaced,
    "orders.order.confirmed": ev.OrderConfirmed,
    "orders.order.cancelled": ev.OrderCancelled,
    "orders.order.refunded": ev.OrderRefunded,
    "orders.product.created": ev.ProductChanged,
    "orders.product.updated": ev.ProductChanged,
    "orders.stock.changed": ev.StockChanged,
    "orders.merchant.created": ev.MerchantChanged,
    "orders.merchant.key_rotated": ev.MerchantChanged,
    "payments.payment.authorized": ev.PaymentChanged,
    "payments.payment.captured": ev.PaymentChanged,
    "payments.payment.voided": ev.PaymentChanged,
    "payments.payment.failed": ev.PaymentChanged,
    "payments.payment.refunded": ev.PaymentChanged,
    "membership.member.registered": ev.MemberRegistered,
    "membership.tier.changed": ev.TierChanged,
    "membership.points.changed": ev.PointsChanged,
}

# JetStream streams, one per producing service.
STREAMS: dict[str, str] = {
    "ORDERS": "orders.>",
    "PAYMENTS": "payments.>",
    "MEMBERSHIP": "membership.>",
}


def stream_for(subject: str) -> str:
    prefix = subject.split(".", 1)[0]
    for name, pattern in STREAMS.items():
        if pattern.split(".", 1)[0] == prefix:
            return name
    raise ValueError(f"no stream carries subject {subject!r}")


def ce_type(subject: str) -> str:
    """CloudEvents type, versioned: marketplace.orders.order.confirmed.v1."""
    return f"marketplace.{subject}.v1"


def envelope_headers(subject: str, event_id: uuid.UUID, source: str) -> dict[str, str]:
    """Nats-Msg-Id for JetStream de-duplication plus CloudEvents binary-mode headers."""
    if subject not in SUBJECTS:
        raise ValueError(f"unknown event subject {subject!r}; add it to services.common.events")
    return {
        "Nats-Msg-Id": str(event_id),
        "ce-id": str(event_id),
        "ce-specversion": SPEC_VERSION,
        "ce-type": ce_type(subject),
        "ce-source": f"/marketplace/{source}",
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
    }


@dataclass(frozen=True, slots=True)
class Event:
    """An event as a consumer sees it."""

    id: uuid.UUID
    subject: str
    data: bytes
    headers: dict[str, str]
    deliveries: int = 1
    stream_seq: int = 0

    def message(self) -> Any:
        """Decode the body with the message type registered for the subject."""
        cls = SUBJECTS.get(self.subject)
        if cls is None:
            raise ValueError(f"no message type registered for {self.subject!r}")
        msg = cls()
        msg.ParseFromString(self.data)
        return msg

    @property
    def time(self) -> datetime:
        raw = self.headers.get("ce-time")
        return datetime.fromisoformat(raw) if raw else datetime.now(UTC)
