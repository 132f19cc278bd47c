"""A bounded checkout burst over real HTTP, and the checks every fault scenario ends with."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx

from services.cli.audit import run_audit
from tests import factories
from tests.faults.harness import Catalog, ServiceStack
from tests.helpers import eventually

MEMBERS = 20
BURST = 200


@dataclass
class BurstResult:
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> status answered
    done: int = 0


async def members(
    http: httpx.AsyncClient, stack: ServiceStack, count: int = MEMBERS
) -> list[factories.SignedIn]:
    url = stack.url("membership")
    return list(await asyncio.gather(*(factories.member(http, url) for _ in range(count))))


async def checkout_burst(
    http: httpx.AsyncClient,
    stack: ServiceStack,
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
    http: httpx.AsyncClient, stack: ServiceStack, buyer: factories.SignedIn,
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


async def assert_settled(stack: ServiceStack, accepted: dict[str, str]) -> None:
    """No order stays PENDING, and every accepted order ended CONFIRMED or CANCELLED."""

    async def pending() -> int:
        rows = await stack.sql("SELECT count(*) AS n FROM orders.orders WHERE status = 'PENDING'")
        return int(rows[0]["n"])

    await eventually(pending, until=lambda n: n == 0, timeout_s=60, what="no PENDING order")
    rows = await stack.sql(
        "SELECT id::text AS id, status FROM orders.orders WHERE id = ANY($1::uuid[])",
        list(accepted),
    )
    final = {r["id"]: r["status"] for r in rows}
    assert set(final) == set(accepted), "every accepted order exists"
    assert set(final.values()) <= {"CONFIRMED", "CANCELLED"}, Counter(final.values())
    for order_id, answered in accepted.items():
        if answered in ("CONFIRMED", "CANCELLED"):
            assert final[order_id] == answered, f"order {order_id} changed after its answer"


async def assert_outboxes_drained(stack: ServiceStack) -> None:
    async def backlog() -> int:
        total = 0
        for schema in ("orders", "payments", "membership"):
            rows = await stack.sql(
                f"SELECT count(*) AS n FROM {schema}.outbox WHERE published_at IS NULL"
            )
            total += int(rows[0]["n"])
        return total

    await eventually(backlog, until=lambda n: n == 0, timeout_s=60, what="outboxes drained")


async def assert_audit_clean(stack: ServiceStack) -> None:
    results = await run_audit(stack.db.auditor_dsn, settle_s=30)
    failures = {c.name: c.violations[:5] for c in results if not c.ok}
    assert not failures, failures
