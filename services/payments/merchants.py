"""Merchants known to payments: their key hashes, so a merchant can read its own balance."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.common import auth


async def upsert(
    conn: asyncpg.Connection, *, merchant_id: uuid.UUID, name: str, api_key_hash: str,
    changed_at: datetime,
) -> None:
    """Record the merchant's current key; a change older than the stored one is ignored."""
    await conn.execute(
        "INSERT INTO merchants (id, name, api_key_hash, changed_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, "
        "api_key_hash = EXCLUDED.api_key_hash, changed_at = EXCLUDED.changed_at, "
        "updated_at = now() WHERE merchants.changed_at <= EXCLUDED.changed_at",
        merchant_id, name, api_key_hash, changed_at,
    )


async def by_api_key(conn: asyncpg.Connection, api_key: str) -> uuid.UUID | None:
    """The merchant whose current key this is, if any."""
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM merchants WHERE api_key_hash = $1", auth.hash_api_key(api_key)
    )
    return found
