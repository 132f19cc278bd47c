"""Checkouts refused in front of the app while every checkout slot of the process is taken.

Past capacity most checkouts are refused, and a refusal that went through the app (tracing,
routing, body validation, token check, the saga's own admission) cost orders about 0.7 ms
of CPU: at three times capacity the refusals took about a quarter of a core of the machine's
two, and 30 % fewer checkouts were confirmed than at capacity. Refused here, only uvicorn's
parsing and the answer itself are paid for. While the process has a free slot nothing
changes: the saga admits in its own order (member rate, a hot SKU's gate, then the slots),
and so answers a flash sale's crowd with its SKU's 429 first.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from services.common import metrics, web
from services.orders.admission import SHED_DETAIL, Slots
from services.orders.views import CHECKOUT_PATH


class CheckoutShedding:
    """ASGI, outermost: `POST /v1/orders` answers 503 + Retry-After at once while `slots`
    are full. The answer carries the service's headers and is counted in its metrics."""

    def __init__(self, app: ASGIApp, slots: Slots) -> None:
        self.app, self.slots = app, slots
        # Built once: the answer never varies (no trace is open this far out).
        self.body = web.problem_bytes(503, "overloaded", "Service overloaded", SHED_DETAIL,
                                      instance=CHECKOUT_PATH)
        self.requests = metrics.HTTP_REQUESTS.labels("POST", CHECKOUT_PATH, "503")
        self.latency = metrics.HTTP_LATENCY.labels("POST", CHECKOUT_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.slots.full and scope["type"] == "http" and scope["path"] == CHECKOUT_PATH
                and scope["method"] == "POST"):
            start = time.perf_counter()
            await web.send_problem(send, 503, self.body, web.RETRY_AFTER_1)
            metrics.HTTP_REJECTED.inc()
            self.requests.inc()
            self.latency.observe(time.perf_counter() - start)
            return
        await self.app(scope, receive, send)
