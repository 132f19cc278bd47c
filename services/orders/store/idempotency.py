"""Idempotency keys per member: claim, tie to an order, complete with the response bytes."""

from __future__ import annotations

import uuid

import asyncpg

# $1 member, $2 key, $3 request hash, $4 claim timeout (s), $5 order; a row when claimed.
CLAIM = (
    "INSERT INTO idempotency_keys (member_id, key, request_hash, status, order_id) "
    "VALUES ($1, $2, $3, 'in_flight', $5) "
    "ON CONFLICT (member_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
    "  status = 'in_flight', order_id = EXCLUDED.order_id, response_status = NULL, "
    "  response_body = NULL, created_at = now(), expires_at = now() + interval '24 hours' "
    "WHERE idempotency_keys.expires_at < now() OR (idempotency_keys.status = 'in_flight' "
    "  AND idempotency_keys.order_id IS NULL "
    "  AND idempotency_keys.created_at < now() - make_interval(secs => $4)) "
    "RETURNING true"
)


async def claim(
    conn: asyncpg.Connection, *, member_id: uuid.UUID, key: str, request_hash: str,
    order_id: uuid.UUID, claim_timeout_s: float,
) -> asyncpg.Record | None:
    """Claim the key for the order about to be created (None), or return the row holding it.

    Runs in the transaction that creates the order, so the key and its order commit (or
    vanish) together; a concurrent claim of the same key waits for that transaction.
    An expired key, or a claim abandoned before any order existed (a request that crashed
    under the claim-first protocol of earlier versions), is taken over: nothing happened
    under it that a retry could repeat.
    """
    claimed = await conn.fetchval(CLAIM, member_id, key, request_hash, claim_timeout_s, order_id)
    if claimed:
        return None
    row = await lookup(conn, member_id=member_id, key=key, live_only=False)
    assert row is not None, "a conflicting key cannot vanish (keys are only purged when expired)"
    return row


async def lookup(
    conn: asyncpg.Connection, *, member_id: uuid.UUID, key: str, live_only: bool = True
) -> asyncpg.Record | None:
    """The record under the key (by default only a live one): what a replay answers from."""
    return await conn.fetchrow(
        "SELECT request_hash, status, order_id, response_status, response_body "
        "FROM idempotency_keys WHERE member_id = $1 AND key = $2 "
        "AND (NOT $3 OR expires_at >= now())",
        member_id, key, live_only,
    )


async def complete(
    conn: asyncpg.Connection, *, order_id: uuid.UUID, status: int, body: bytes
) -> None:
    """Store the final response, in the transaction that gives the order its final state."""
    await conn.execute(
        "UPDATE idempotency_keys SET status = 'done', response_status = $2, response_body = $3 "
        "WHERE order_id = $1 AND status = 'in_flight'",
        order_id, status, body,
    )


async def purge_expired(conn: asyncpg.Connection, *, limit: int = 1000) -> int:
    result = await conn.execute(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT $1))",
        limit,
    )
    return int(result.split()[-1])
