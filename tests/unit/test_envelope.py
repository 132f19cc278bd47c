"""CloudEvents headers and JSON logs: pure, no I/O."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from marketplace.events.v1 import events_pb2

from services.common.events import Event, envelope_headers
from services.common.telemetry import JsonFormatter


def test_envelope_carries_dedup_id_and_cloudevents_attributes() -> None:
    event_id = uuid.uuid4()
    headers = envelope_headers("orders.order.confirmed", event_id, "orders")
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == str(event_id)
    assert headers["ce-type"] == "marketplace.orders.order.confirmed.v1"
    assert headers["ce-source"] == "/marketplace/orders"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-time"].endswith("Z")


def test_unknown_subject_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event subject"):
        envelope_headers("orders.order.exploded", uuid.uuid4(), "orders")


def test_event_decodes_its_body_by_subject() -> None:
    body = events_pb2.OrderCancelled(order_id="o-1", reason="payment_declined")
    event = Event(uuid.uuid4(), "orders.order.cancelled", body.SerializeToString(), {})
    assert event.message().reason == "payment_declined"


def test_json_log_line_carries_extra_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.order_id = "o-1"
    line = json.loads(JsonFormatter("orders").format(record))
    assert line["msg"] == "hello world"
    assert line["service"] == "orders"
    assert line["order_id"] == "o-1"
