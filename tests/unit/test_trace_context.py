"""While no span is recorded, requests still continue the caller's trace, or start one."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from services.common import telemetry


async def _trace_id_seen(headers: list[tuple[bytes, bytes]], path: str = "/v1/orders") -> str:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(telemetry.current_trace_id() or "")

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await telemetry.TraceContext(app)(scope, None, None)
    return seen[0]


async def test_the_callers_trace_is_continued_and_a_new_one_started_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The provider a service sets up when nothing exports: spans unsampled, ids still made.
    unsampled = TracerProvider(sampler=ParentBased(ALWAYS_OFF)).get_tracer("test")
    monkeypatch.setattr(telemetry, "_tracer", unsampled)
    caller = secrets.token_hex(16)

    continued = await _trace_id_seen(
        [(b"traceparent", f"00-{caller}-{secrets.token_hex(8)}-00".encode())])
    started = await _trace_id_seen([(b"content-type", b"application/json")])
    probe = await _trace_id_seen([], path="/readyz")

    assert continued == caller
    assert len(started) == 32 and started not in (caller, "0" * 32)
    assert probe == ""  # probes are not traced
