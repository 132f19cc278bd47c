"""Refresh tokens, stored only as hashes, in rotation families."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.common.purge import Purge


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    token_hash: str
    member_id: uuid.UUID
    family_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


async def insert(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    token_hash: str,
    member_id: uuid.UUID,
    family_id: uuid.UUID,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, member_id, family_id, expires_at) "
        "VALUES ($1, $2, $3, $4)",
        token_hash, member_id, family_id, expires_at,
    )


async def lock(conn: asyncpg.Connection, token_hash: str) -> RefreshTokenRow | None:
    """The token's row, locked so that two refreshes with it cannot both succeed."""
    record = await conn.fetchrow(
        "SELECT token_hash, member_id, family_id, expires_at, used_at, revoked_at "
        "FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        token_hash,
    )
    return RefreshTokenRow(**dict(record)) if record is not None else None


async def mark_used(conn: asyncpg.Connection, token_hash: str) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
                       token_hash)


async def revoke_family(conn: asyncpg.Connection, family_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() "
        "WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )


def purge(keep: timedelta) -> Purge:
    """Tokens expired more than `keep` ago: a reuse that late needs no family revoked."""
    return Purge("refresh_tokens", "expires_at < now() - $2::interval", keep)
