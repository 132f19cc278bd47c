"""A steady checkout burst that runs until told to stop, placed the way a storefront does.

Each checkout has its own Idempotency-Key and is sent again with the same key until it has
an answer: after a connection error (a replica or the pooler died under it), a 502/504 (the
balancer lost the replica mid-request), a 503 or 429 (shed, after its Retry-After) and a 409
idempotency-key-in-flight (an earlier attempt's order is still being finished, by the saga
or by recovery). Whatever else comes back is the checkout's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests import factories
from tests.faults.harness import Catalog, Deployment

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
IN_FLIGHT = "idempotency-key-in-flight"
PROBLEM_JSON = "application/problem+json"
PAUSE_S = 0.5  # before resending after a connection error (no Retry-After to follow)


@dataclass
class SteadyResult:
    offered: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # each checkout's final answer
    retries: Counter[str] = field(default_factory=Counter)  # each resend, by what caused it
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> status answered
    unanswered: list[str] = field(default_factory=list)  # keys still without an answer
    # Every attempt: when it was sent and answered (monotonic), its status or error's name.
    attempts: list[tuple[float, float, str]] = field(default_factory=list)

    def outcomes_between(self, t0: float, t1: float) -> Counter[str]:
        """What the attempts sent in [t0, t1) got, other than 201."""
        return Counter(o for t, _, o in self.attempts if t0 <= t < t1 and o != "201")

    def first_accepted_after(self, t0: float) -> float | None:
        """Seconds from `t0` to the first attempt sent after it that was answered 201."""
        sent = [t for t, _, outcome in self.attempts if t >= t0 and outcome == "201"]
        return min(sent) - t0 if sent else None


def _retry_after(answer: httpx.Response) -> float:
    try:
        return float(answer.headers.get("retry-after", PAUSE_S))
    except ValueError:
        return PAUSE_S


def _outcome(answer: httpx.Response) -> str:
    """The status; `503 balancer` when the load balancer answered it itself (no replica of
    the service was in its rotation), not a service (whose problems are problem+json)."""
    status = str(answer.status_code)
    if answer.status_code >= 500 and PROBLEM_JSON not in answer.headers.get("content-type", ""):
        return f"{status} balancer"
    return status


def _must_resend(answer: httpx.Response) -> bool:
    if answer.status_code in RETRIED_STATUSES:
        return True
    if answer.status_code != 409:
        return False
    try:
        return str(answer.json().get("type", "")).endswith(IN_FLIGHT)
    except ValueError:
        return False


async def place_until_answered(
    http: httpx.AsyncClient, url: str, buyer: factories.SignedIn, body: dict[str, object],
    result: SteadyResult, *, within_s: float,
) -> httpx.Response | None:  # fmt: skip
    """One checkout under one key, resent until it has an answer; None after `within_s`."""
    headers = buyer.auth | factories.idem()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sent = time.monotonic()
        try:
            answer = await http.post(f"{url}/v1/orders", json=body, headers=headers)
        except httpx.TransportError as exc:
            result.attempts.append((sent, time.monotonic(), type(exc).__name__))
            result.retries[type(exc).__name__] += 1
            await asyncio.sleep(PAUSE_S)
            continue
        outcome = _outcome(answer)
        result.attempts.append((sent, time.monotonic(), outcome))
        if not _must_resend(answer):
            return answer
        result.retries[outcome] += 1
        await asyncio.sleep(_retry_after(answer))
    result.unanswered.append(headers["idempotency-key"])
    return None


async def steady_burst(
    http: httpx.AsyncClient, stack: Deployment, buyers: list[factories.SignedIn],
    catalog: Catalog, *, stop: asyncio.Event, token: str = "tok_visa",
    answer_within_s: float = 180.0, into: SteadyResult | None = None,
) -> SteadyResult:  # fmt: skip
    """Each buyer checks out one unit after another until `stop` is set; every checkout
    begun is carried to its answer (or recorded unanswered after `answer_within_s`).
    `into` lets the caller watch the result fill while the burst runs."""
    result = into if into is not None else SteadyResult()
    body: dict[str, object] = factories.order_body(catalog.sku_id, token=token)
    url = stack.url("orders")

    async def buyer_loop(buyer: factories.SignedIn) -> None:
        while not stop.is_set():
            result.offered += 1
            answer = await place_until_answered(
                http, url, buyer, body, result, within_s=answer_within_s)
            if answer is None:
                continue
            result.answers[str(answer.status_code)] += 1
            order = answer.json() if answer.status_code in (201, 202, 402) else {}
            order = order.get("order", order)
            if "id" in order:
                result.accepted[order["id"]] = order["status"]

    await asyncio.gather(*(buyer_loop(b) for b in buyers))
    return result
