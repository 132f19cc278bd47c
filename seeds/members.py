"""Load-test shoppers in bulk: one COPY into membership's members, one password hash for all.

Registering through REST costs an argon2 hash each (~90 ms of a core); a flash-sale test or
a benchmark needs hundreds of shoppers at once. These rows are what `POST /v1/members`
would store (BRONZE, no points); they skip `membership.member.registered`, so analytics'
demographics do not count them. Never for production data.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from services.membership.passwords import Passwords

COLUMNS = ("id", "email", "password_hash", "name", "birth_year", "region", "gender")


async def bulk_members(
    membership_dsn: str, count: int, *, password: str, prefix: str = "shopper"
) -> list[uuid.UUID]:
    """Insert `count` members who sign in as <prefix>-<n>-<run>@example.com; their ids."""
    password_hash = await Passwords(concurrency=1).hash(password)
    run = uuid.uuid4().hex[:8]
    ids = [uuid.uuid4() for _ in range(count)]
    rows: Sequence[tuple[object, ...]] = [
        (member_id, f"{prefix}-{n}-{run}@example.com", password_hash, f"Shopper {n}",
         1980 + n % 30, "CN-ZJ", None)
        for n, member_id in enumerate(ids)
    ]
    conn = await asyncpg.connect(membership_dsn, server_settings={"search_path": "membership"})
    try:
        await conn.copy_records_to_table("members", records=rows, columns=COLUMNS,
                                         schema_name="membership")
    finally:
        await conn.close()
    return ids
