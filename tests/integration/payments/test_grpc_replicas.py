"""Orders' gRPC channel over two payments processes: calls balanced per call, and a replica
killed mid-burst costs no call (each is retried on the other with its idempotency key)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from marketplace.payments.v1 import payments_pb2 as pb
from marketplace.payments.v1 import payments_pb2_grpc

from services.common import grpcutil
from tests.helpers import eventually
from tests.infra import FreshDb
from tests.integration.payments.harness import authorize_request
from tests.integration.processes import SECRET, Replica, replicas

pytestmark = pytest.mark.topology

CALLS = "marketplace_payments_processor_calls_total"


def sale() -> pb.AuthorizeRequest:
    request = authorize_request()
    request.capture_idempotency_key = f"capture-{request.order_id}"
    return request


async def authorized(replica: Replica) -> float:
    return await replica.metric(CALLS, operation="authorize", outcome="approved")


async def test_calls_spread_over_replicas_and_outlive_one_killed_mid_burst(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str, tmp_path: Path
) -> None:
    db = await fresh_db("grpc")
    # Each processor call takes a while, so that the burst is in flight when one dies.
    slow = {"PAYMENTS_PROCESSOR_LATENCY_MS": "300"}
    async with replicas("payments", 2, db=db, nats_url=nats_url, tmp=tmp_path,
                        env=slow) as (a, b):
        target = grpcutil.target(f"{a.grpc_address},{b.grpc_address}")
        async with grpcutil.channel(target, service="orders", secret=SECRET,
                                    timeout_s=15) as channel:
            stub = payments_pb2_grpc.PaymentServiceStub(channel)

            async def both_connected() -> list[float]:
                # Round robin picks among connected replicas: until both are, one takes all.
                await stub.Authorize(sale())
                return [await authorized(a), await authorized(b)]

            before = await eventually(both_connected, until=lambda seen: min(seen) > 0,
                                      what="a call on each replica")
            spread = [await stub.Authorize(sale()) for _ in range(20)]
            per_replica = [await authorized(a) - before[0], await authorized(b) - before[1]]

            burst = [sale() for _ in range(40)]
            calls = [asyncio.ensure_future(stub.Authorize(r)) for r in burst]
            await asyncio.sleep(0.15)  # sent, and waiting on the processor
            a.kill()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            replayed = await asyncio.gather(*(stub.Authorize(r) for r in burst))
        survivor_calls = await authorized(b)

    conn = await asyncpg.connect(db.dsn("payments"), server_settings={"search_path": "payments"})
    try:
        rows = await conn.fetch("SELECT order_id::text, count(*) AS n FROM payments "
                                "WHERE order_id = ANY($1::uuid[]) GROUP BY order_id",
                                [r.order_id for r in burst])
    finally:
        await conn.close()

    assert [p.status for p in spread] == [pb.PAYMENT_STATUS_CAPTURED] * 20
    assert per_replica == [10, 10]  # one call here, the next there
    assert [type(o).__name__ for o in outcomes if isinstance(o, BaseException)] == []
    assert all(o.status == pb.PAYMENT_STATUS_CAPTURED for o in outcomes)  # type: ignore[union-attr]
    assert survivor_calls - before[1] - per_replica[1] > 20  # b took over a's share too
    # Same keys, same payments: one per order, and a replay answers with it.
    assert {r["order_id"]: r["n"] for r in rows} == {r.order_id: 1 for r in burst}
    assert [p.id for p in replayed] == [o.id for o in outcomes]  # type: ignore[union-attr]
