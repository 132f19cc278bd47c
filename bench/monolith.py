"""The monolith ceiling: one FastAPI endpoint that runs the order transaction of a checkout
and an awaited JetStream publish, nothing else (no auth, no gRPC, no payment, no relay).

Configured by BENCH_MONO_DSN (the scratch database of bench/ceilings.py) and
BENCH_MONO_NATS; it publishes to its own stream, BENCHMONO, deleted at shutdown.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import nats
import orjson
from fastapi import FastAPI, Header
from fastapi.responses import Response

STREAM, SUBJECT = "BENCHMONO", "benchmono.order.placed"
PRODUCT = uuid.UUID(hashlib.md5(b"p").hexdigest())  # md5('p')::uuid, see ceilings.py
MERCHANT = uuid.UUID(hashlib.md5(b"merchant").hexdigest())  # md5('merchant')::uuid
_CLAIM = (
    "INSERT INTO idempotency_keys (member_id, key, request_hash, status) "
    "VALUES ($1, $2, $3, 'in_flight') ON CONFLICT (member_id, key) DO NOTHING RETURNING true")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(
        os.environ["BENCH_MONO_DSN"], min_size=4, max_size=20,
        server_settings={"search_path": "orders"})
    app.state.nc = await nats.connect(os.environ["BENCH_MONO_NATS"])
    app.state.js = app.state.nc.jetstream()
    await app.state.js.add_stream(name=STREAM, subjects=["benchmono.>"])
    try:
        yield
    finally:
        await app.state.js.delete_stream(STREAM)
        await app.state.nc.close()
        await app.state.pool.close()


app = FastAPI(title="monolith checkout", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.post("/v1/orders", status_code=201)
async def checkout(
    body: dict[str, str], idempotency_key: Annotated[str, Header(alias="Idempotency-Key")],
) -> Response:
    """Body {"sku_id", "member_id"}: hold one unit, record the order, publish the event."""
    sku, member = uuid.UUID(body["sku_id"]), uuid.UUID(body["member_id"])
    order_id, event_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    payload = orjson.dumps({"order_id": str(order_id), "sku_id": str(sku), "total": 12999})
    async with app.state.pool.acquire() as conn:
        if not await conn.fetchval(_CLAIM, member, idempotency_key, "hash"):
            return Response(b'{"title":"in flight"}', status_code=409)
        async with conn.transaction():
            if not await conn.fetchval(
                "UPDATE skus SET stock = stock - 1, held = held + 1, updated_at = now() "
                "WHERE id = $1 AND stock >= 1 RETURNING true", sku):
                return Response(b'{"title":"out of stock"}', status_code=409)
            await conn.execute(
                "INSERT INTO orders (id, member_id, status, subtotal, discount, points_redeemed, "
                "total, currency, payment_token, idempotency_key, payment_deadline, retry_at, "
                "created_at) VALUES ($1, $2, 'PENDING', 12999, 0, 0, 12999, 'CNY', 'tok_visa', "
                "$3, $4, $4, $5)", order_id, member, idempotency_key,
                now + timedelta(minutes=15), now)
            await conn.execute(
                "INSERT INTO order_lines (order_id, line_no, sku_id, product_id, merchant_id, "
                "category, quantity, unit_price, line_total) "
                "VALUES ($1, 1, $2, $3, $4, 'apparel', 1, 12999, 12999)",
                order_id, sku, PRODUCT, MERCHANT)
            await conn.execute(
                "UPDATE idempotency_keys SET order_id = $3 WHERE member_id = $1 AND key = $2",
                member, idempotency_key, order_id)
            await conn.execute(
                "INSERT INTO outbox (event_id, subject, aggregate_id, payload, headers) "
                "VALUES ($1, $2, $3, $4, '{}'::jsonb)", event_id, SUBJECT, str(order_id), payload)
    await app.state.js.publish(SUBJECT, payload, headers={"Nats-Msg-Id": str(event_id)})
    return Response(orjson.dumps({"id": str(order_id), "status": "PENDING"}),
                    status_code=201, media_type="application/json")
