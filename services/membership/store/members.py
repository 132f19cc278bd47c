"""The members table: accounts, tier, lifetime spend and the points balance."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.membership.domain.standing import Standing
from services.membership.domain.tiers import Tier

_COLUMNS = (
    "id, email, password_hash, name, birth_year, region, gender, tier, lifetime_spend, "
    "points_balance, points_held, created_at"
)


@dataclass(frozen=True, slots=True)
class MemberRow:
    id: uuid.UUID
    email: str
    password_hash: str
    name: str
    birth_year: int
    region: str
    gender: str | None
    tier: str
    lifetime_spend: int
    points_balance: int
    points_held: int
    created_at: datetime

    @property
    def points_available(self) -> int:
        return self.points_balance - self.points_held

    @property
    def standing(self) -> Standing:
        return Standing(lifetime_spend=self.lifetime_spend, tier=Tier(self.tier),
                        points_balance=self.points_balance)


def _row(record: asyncpg.Record | None) -> MemberRow | None:
    return MemberRow(**dict(record)) if record is not None else None


class EmailTaken(Exception):
    """Another member already registered this email (compared case-insensitively)."""


async def insert(
    conn: asyncpg.Connection,
    *,
    member_id: uuid.UUID,
    email: str,
    password_hash: str,
    name: str,
    birth_year: int,
    region: str,
    gender: str | None,
) -> MemberRow:
    try:
        record = await conn.fetchrow(
            f"INSERT INTO members (id, email, password_hash, name, birth_year, region, gender) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}",
            member_id, email, password_hash, name, birth_year, region, gender,
        )
    except asyncpg.UniqueViolationError as exc:
        raise EmailTaken(email) from exc
    member = _row(record)
    assert member is not None
    return member


async def by_id(
    conn: asyncpg.Connection | asyncpg.Pool, member_id: uuid.UUID, *, for_update: bool = False
) -> MemberRow | None:
    """One member; `for_update` locks the row until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    return _row(await conn.fetchrow(f"SELECT {_COLUMNS} FROM members WHERE id = $1{lock}",
                                    member_id))


async def lock_many(
    conn: asyncpg.Connection, member_ids: Collection[uuid.UUID]
) -> list[MemberRow]:
    """The members found among `member_ids`, locked until the transaction ends.

    In id order, so that two replicas locking overlapping sets wait on each other instead
    of deadlocking.
    """
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM members WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(member_ids),
    )
    return [MemberRow(**dict(r)) for r in records]


async def by_email(conn: asyncpg.Connection | asyncpg.Pool, email: str) -> MemberRow | None:
    return _row(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM members WHERE lower(email) = lower($1)", email
    ))


async def set_password_hash(
    conn: asyncpg.Connection | asyncpg.Pool, member_id: uuid.UUID, password_hash: str
) -> None:
    await conn.execute("UPDATE members SET password_hash = $2 WHERE id = $1",
                       member_id, password_hash)


async def set_spend_and_tier(
    conn: asyncpg.Connection, member_id: uuid.UUID, *, lifetime_spend: int, tier: str
) -> None:
    await conn.execute(
        "UPDATE members SET lifetime_spend = $2, tier = $3 WHERE id = $1",
        member_id, lifetime_spend, tier,
    )


async def set_standings(
    conn: asyncpg.Connection, standings: Mapping[uuid.UUID, Standing]
) -> None:
    """Store each member's spend, tier and balance; the caller holds their row locks."""
    await conn.execute(
        "UPDATE members m SET lifetime_spend = s.lifetime_spend, tier = s.tier, "
        "points_balance = s.points_balance "
        "FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[]) "
        "AS s (id, lifetime_spend, tier, points_balance) WHERE m.id = s.id",
        list(standings), [s.lifetime_spend for s in standings.values()],
        [s.tier.value for s in standings.values()],
        [s.points_balance for s in standings.values()],
    )


async def add_points_held(conn: asyncpg.Connection, member_id: uuid.UUID, delta: int) -> None:
    """Relative, so the CHECK (points_held <= points_balance) judges the row as it really is."""
    await conn.execute("UPDATE members SET points_held = points_held + $2 WHERE id = $1",
                       member_id, delta)
