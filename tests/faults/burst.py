"""A bounded checkout burst over real HTTP, and the checks every fault scenario ends with."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx
import nats

from services.cli.audit import run_audit
from services.common.events import STREAMS
from tests import factories
from tests.faults.harness import Catalog, Deployment
from tests.helpers import eventually
from tests.infra import FreshDb

MEMBERS = 20
SCHEMAS = ("orders", "payments", "membership", "analytics")
BURST = 200


@dataclass
class BurstResult:
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> status answered
    done: int = 0


async def members(
    http: httpx.AsyncClient, stack: Deployment, count: int = MEMBERS
) -> list[factories.SignedIn]:
    url = stack.url("membership")
    return list(await asyncio.gather(*(factories.member(http, url) for _ in range(count))))


async def checkout_burst(
    http: httpx.AsyncClient,
    stack: Deployment,
    buyers: list[factories.SignedIn],
    catalog: Catalog,
    *,
    total: int = BURST,
    halfway: asyncio.Event | None = None,
    token: str = "tok_visa",
) -> BurstResult:
    """`total` checkouts, one stream per buyer; sets `halfway` after a quarter is answered.

    A request that fails on the wire (a service was killed) counts as not accepted."""
    result = BurstResult()
    per_buyer = total // len(buyers)

    async def buyer_loop(buyer: factories.SignedIn) -> None:
        for _ in range(per_buyer):
            try:
                answer = await _place(http, stack, buyer, catalog, token)
                result.statuses[str(answer.status_code)] += 1
                order = answer.json().get("order", answer.json())
                if answer.status_code in (201, 202, 402) and "id" in order:
                    result.accepted[order["id"]] = order["status"]
            except httpx.HTTPError as exc:
                result.statuses[type(exc).__name__] += 1
            result.done += 1
            if halfway is not None and result.done >= total // 4:
                halfway.set()

    await asyncio.gather(*(buyer_loop(b) for b in buyers))
    return result


async def _place(
    http: httpx.AsyncClient, stack: Deployment, buyer: factories.SignedIn,
    catalog: Catalog, token: str, *, attempts: int = 10,
) -> httpx.Response:
    """One checkout as a storefront places it: a shed request (503 + Retry-After) is sent
    again after the pause it asks for, with the same Idempotency-Key."""
    headers = buyer.auth | factories.idem()
    body = factories.order_body(catalog.sku_id, token=token)
    for _ in range(attempts):
        answer = await http.post(f"{stack.url('orders')}/v1/orders", json=body, headers=headers)
        if answer.status_code != 503 or "retry-after" not in answer.headers:
            return answer
        await asyncio.sleep(float(answer.headers["retry-after"]))  # as the server asks
    return answer


async def assert_settled(stack: Deployment, accepted: dict[str, str]) -> None:
    """No order stays PENDING, and every accepted order ended CONFIRMED or CANCELLED."""

    async def pending() -> int:
        rows = await stack.db.sql(
            "SELECT count(*) AS n FROM orders.orders WHERE status = 'PENDING'")
        return int(rows[0]["n"])

    await eventually(pending, until=lambda n: n == 0, timeout_s=60, what="no PENDING order")
    rows = await stack.db.sql(
        "SELECT id::text AS id, status FROM orders.orders WHERE id = ANY($1::uuid[])",
        list(accepted),
    )
    final = {r["id"]: r["status"] for r in rows}
    assert set(final) == set(accepted), "every accepted order exists"
    assert set(final.values()) <= {"CONFIRMED", "CANCELLED"}, Counter(final.values())
    for order_id, answered in accepted.items():
        if answered in ("CONFIRMED", "CANCELLED"):
            assert final[order_id] == answered, f"order {order_id} changed after its answer"


async def assert_outboxes_drained(stack: Deployment) -> None:
    async def backlog() -> int:
        total = 0
        for schema in ("orders", "payments", "membership"):
            rows = await stack.db.sql(
                f"SELECT count(*) AS n FROM {schema}.outbox WHERE published_at IS NULL"
            )
            total += int(rows[0]["n"])
        return total

    await eventually(backlog, until=lambda n: n == 0, timeout_s=60, what="outboxes drained")


async def assert_audit_clean(stack: Deployment) -> None:
    results = await run_audit(stack.db.auditor_dsn, settle_s=30)
    failures = {c.name: c.violations[:5] for c in results if not c.ok}
    assert not failures, failures


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


async def consumed_subjects(nats_url: str) -> dict[str, list[str]]:
    """Every durable consumer on the streams, with the subjects it takes (JetStream's view)."""
    nc = await nats.connect(nats_url.split(","))
    try:
        js = nc.jetstream()
        consumers = {}
        for stream in STREAMS:
            for info in await js.consumers_info(stream):
                config = info.config
                filters = config.filter_subjects or [config.filter_subject or STREAMS[stream]]
                consumers[info.name] = list(filters)
        return consumers
    finally:
        await nc.close()


async def applied_vs_published(db: FreshDb, nats_url: str) -> dict[str, tuple[int, int, int]]:
    """Per consumer: (events expected, events in its inbox, events that differ).

    Expected: the outbox rows of every schema on the subjects the consumer takes. The inbox
    holds one row per (consumer, event) committed with the effect, so equal sets mean each
    event was applied, and applied once."""
    outbox: dict[str, str] = {}
    for schema in SCHEMAS:
        rows = await db.sql(f"SELECT event_id::text AS id, subject FROM {schema}.outbox")
        outbox |= {r["id"]: r["subject"] for r in rows}
    report = {}
    for consumer, filters in (await consumed_subjects(nats_url)).items():
        expected = {i for i, s in outbox.items() if any(subject_matches(f, s) for f in filters)}
        applied: set[str] = set()
        for schema in SCHEMAS:
            rows = await db.sql(
                f"SELECT event_id::text AS id FROM {schema}.inbox WHERE consumer = $1", consumer)
            applied |= {r["id"] for r in rows}
        report[consumer] = (len(expected), len(applied), len(expected ^ applied))
    return report


async def assert_applied_once(
    db: FreshDb, nats_url: str, *, timeout_s: float = 120
) -> dict[str, tuple[int, int, int]]:
    """Every consumer's inbox ends equal to the outbox events on its subjects (the report)."""
    return await eventually(
        lambda: applied_vs_published(db, nats_url),
        until=lambda r: bool(r) and all(diff == 0 for _, _, diff in r.values()),
        timeout_s=timeout_s, what="every published event applied once by each consumer",
    )  # fmt: skip
