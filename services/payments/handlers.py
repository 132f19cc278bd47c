"""What payments does when an orders event arrives (called inside the inbox transaction)."""

from __future__ import annotations

import uuid
from datetime import UTC

import asyncpg
from marketplace.events.v1 import events_pb2 as ev

from services.common.events import Event
from services.payments import merchants

CONSUMER = "payments-orders"
STREAM = "ORDERS"
SUBJECTS = ("orders.merchant.created", "orders.merchant.key_rotated")


async def handle(conn: asyncpg.Connection, event: Event) -> None:
    message = event.message()
    if not isinstance(message, ev.MerchantChanged):
        raise ValueError(f"payments does not handle {event.subject}")
    if not message.api_key_hash:
        raise ValueError(f"{event.subject} for merchant {message.merchant_id} has no key hash")
    changed_at = (
        message.occurred_at.ToDatetime(tzinfo=UTC)
        if message.HasField("occurred_at") else event.time
    )
    await merchants.upsert(
        conn, merchant_id=uuid.UUID(message.merchant_id), name=message.name,
        api_key_hash=message.api_key_hash.lower(), changed_at=changed_at,
    )
