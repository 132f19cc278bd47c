"""Idempotency keys per member: claim, tie to an order, complete with the response bytes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from services.common.purge import Purge


def claim_sql(*, rows: str, claim_timeout: str) -> str:
    """Claim keys for new orders: `rows` yields (member_id, key, request_hash, order_id).

    Returns (member_id, key) of each key claimed; a key held by a live claim or answer is
    left as it is and returned by nothing. Keys are inserted in (member, key) order, so two
    statements claiming overlapping keys wait on each other in one order (no deadlock).
    """
    return (
        "INSERT INTO idempotency_keys (member_id, key, request_hash, status, order_id) "
        f"SELECT c.member_id, c.key, c.request_hash, 'in_flight', c.order_id FROM {rows} "
        "ORDER BY c.member_id, c.key "
        "ON CONFLICT (member_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
        "  status = 'in_flight', order_id = EXCLUDED.order_id, response_status = NULL, "
        "  response_body = NULL, created_at = now(), expires_at = now() + interval '24 hours' "
        "WHERE idempotency_keys.expires_at < now() OR (idempotency_keys.status = 'in_flight' "
        "  AND idempotency_keys.order_id IS NULL "
        f"  AND idempotency_keys.created_at < now() - make_interval(secs => {claim_timeout})) "
        "RETURNING idempotency_keys.member_id, idempotency_keys.key"
    )


def complete_sql(*, rows: str) -> str:
    """Store final answers: `rows` yields (order_id, status, body) as `a`; a key already
    done is left as it is (its first answer stands)."""
    return (
        "UPDATE idempotency_keys k SET status = 'done', response_status = a.status, "
        f"response_body = a.body FROM {rows} WHERE k.order_id = a.order_id "
        "AND k.status = 'in_flight' RETURNING k.order_id"
    )


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


# Expired keys (24 h after their claim) answer nothing any more: the purge deletes them.
PURGE = Purge("idempotency_keys", "expires_at < now() - $2::interval", timedelta(0))
