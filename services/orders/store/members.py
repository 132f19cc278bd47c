"""Orders' projection of membership's tiers: the discount a checkout without points uses."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.common import db

# The newer event wins, whichever arrives last: versions are (event time, stream sequence).
_MERGE_TIER = """
INSERT INTO member_tiers (member_id, tier, changed_at, stream_seq) VALUES ($1, $2, $3, $4)
ON CONFLICT (member_id) DO UPDATE SET tier = EXCLUDED.tier, changed_at = EXCLUDED.changed_at,
    stream_seq = EXCLUDED.stream_seq, updated_at = now()
WHERE (member_tiers.changed_at, member_tiers.stream_seq)
    < (EXCLUDED.changed_at, EXCLUDED.stream_seq)
"""


async def merge_tier(
    conn: asyncpg.Connection, member_id: uuid.UUID, *, tier: str, changed_at: datetime,
    stream_seq: int,
) -> None:
    """Record `tier` unless the row already holds a newer one."""
    await conn.execute(_MERGE_TIER, member_id, tier, changed_at, stream_seq)


async def tiers_of(
    conn: asyncpg.Connection, member_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Each member's tier as orders knows it; a member whose registration has not arrived
    yet is missing."""
    rows = await db.fetch_by_ids(conn, "SELECT member_id, tier FROM member_tiers WHERE",
                                 "member_id", member_ids)
    return {r["member_id"]: r["tier"] for r in rows}
