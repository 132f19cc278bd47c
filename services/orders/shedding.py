"""Checkouts refused in front of the app while every checkout slot of the process is taken.

Past capacity most checkouts are refused, and a refusal that went through the app (tracing,
routing, body validation, token check, the saga's own admission) cost orders about 0.7 ms
of CPU: at three times capacity the refusals took about a quarter of a core of the machine's
two, and 30 % fewer checkouts were confirmed than at capacity. Refused here, only uvicorn's
parsing and the answer itself are paid for. While the process has a free slot nothing
changes: the saga admits in its own order (member rate, a hot SKU's gate, then the slots),
and so answers a flash sale's crowd with its SKU's 429 first.

A flash sale's crowd is refused here too: while some hot SKU has its limit of checkouts in
progress (`admission.SkuGate`), a small checkout body is read and, when it names such a
SKU, answered the gate's 429 without the app. Through the app each such refusal cost
orders about 0.7 ms of CPU, so a crowd of thousands a second kept the process busy
refusing while the few admitted checkouts, and every answer, waited behind them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import metrics, web
from services.orders.admission import SHED_DETAIL, SkuGate, Slots, hot_sku_detail
from services.orders.views import CHECKOUT_PATH


class CheckoutShedding:
    """ASGI, outermost: `POST /v1/orders` answers 503 + Retry-After at once while `slots`
    are full. The answer carries the service's headers and is counted in its metrics."""

    def __init__(self, app: ASGIApp, slots: Slots, hot_gate: SkuGate | None = None) -> None:
        self.app, self.slots, self.hot_gate = app, slots, hot_gate
        self.refusals: dict[uuid.UUID, bytes] = {}  # a full SKU's 429 body, built once
        self.refused = metrics.HTTP_REQUESTS.labels("POST", CHECKOUT_PATH, "429")
        # Built once: the answer never varies (no trace is open this far out).
        self.body = web.problem_bytes(503, "overloaded", "Service overloaded", SHED_DETAIL,
                                      instance=CHECKOUT_PATH)
        self.requests = metrics.HTTP_REQUESTS.labels("POST", CHECKOUT_PATH, "503")
        self.latency = metrics.HTTP_LATENCY.labels("POST", CHECKOUT_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["path"] == CHECKOUT_PATH
                and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if self.slots.full:
            await web.send_problem(send, 503, self.body, web.RETRY_AFTER_1)
            metrics.HTTP_REJECTED.inc()
            self.requests.inc()
            self.latency.observe(time.perf_counter() - start)
            return
        if self.hot_gate is not None and self.hot_gate.any_full:
            body = await _small_body(scope, receive)
            if body is not None:
                full = self.hot_gate.full_among(_sku_ids(body))
                if full is not None:
                    await web.send_problem(send, 429, self._refusal(full), web.RETRY_AFTER_1)
                    self.refused.inc()
                    self.latency.observe(time.perf_counter() - start)
                    return
                receive = _replaying(body, receive)
        await self.app(scope, receive, send)

    def _refusal(self, sku: uuid.UUID) -> bytes:
        """The gate's own 429 body (the saga answers the same), kept for the hot SKUs."""
        if (body := self.refusals.get(sku)) is None:
            if len(self.refusals) >= _MAX_REFUSALS:
                self.refusals.clear()
            body = self.refusals[sku] = web.problem_bytes(
                429, "rate-limited", "Too many requests", hot_sku_detail(sku),
                instance=CHECKOUT_PATH)
        return body


# A checkout body is a few hundred bytes; a larger one (or one of unknown length) is left to
# the app, which bounds bodies itself.
_SMALL_BODY = 4096
_MAX_REFUSALS = 1024


async def _small_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole request body when its Content-Length is small, else None (nothing read)."""
    length = dict(scope["headers"]).get(b"content-length")
    if length is None or not length.isdigit() or int(length) > _SMALL_BODY:
        return None
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see it
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _sku_ids(body: bytes) -> Iterator[uuid.UUID]:
    """The SKU ids a checkout body names; none when it is not a well-formed one (the app
    then answers it as it would any other)."""
    try:
        items = orjson.loads(body).get("items")
        for item in items if isinstance(items, list) else ():
            yield uuid.UUID(item["sku_id"])
    except (ValueError, TypeError, AttributeError, KeyError):
        return


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app: the body read here first, then the connection's own."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
