"""Issuing access/refresh token pairs and rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.common.errors import unauthorized
from services.membership.keys import KeyRing
from services.membership.store import members
from services.membership.store import tokens as store

REFRESH_PREFIX = "rt_"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str


def hash_refresh_token(token: str) -> str:
    # 256 random bits: a fast hash is enough, there is no dictionary to guess from.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenIssuer:
    ring: KeyRing
    access_ttl: timedelta
    refresh_ttl: timedelta

    async def issue(
        self,
        conn: asyncpg.Connection | asyncpg.Pool,
        *,
        member_id: uuid.UUID,
        tier: str,
        family_id: uuid.UUID | None = None,
    ) -> TokenPair:
        """A new pair; the refresh token joins `family_id` (a rotation) or starts a family."""
        now = datetime.now(UTC)
        refresh_token = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await store.insert(
            conn,
            token_hash=hash_refresh_token(refresh_token),
            member_id=member_id,
            family_id=family_id or uuid.uuid4(),
            expires_at=now + self.refresh_ttl,
        )
        access = self.ring.access_token(member_id=member_id, tier=tier, now=now,
                                        ttl=self.access_ttl)
        return TokenPair(access, int(self.access_ttl.total_seconds()), refresh_token)

    async def rotate(self, pool: asyncpg.Pool, refresh_token: str) -> TokenPair:
        """Trade a refresh token for a new pair; the old one is spent.

        A spent token presented again means someone else holds a copy: the whole family
        is revoked, so the thief's and the owner's next refresh both fail (sign in again).
        """
        invalid = unauthorized("invalid or expired refresh token; sign in again")
        pair: TokenPair | None = None
        async with pool.acquire() as conn, conn.transaction():
            row = await store.lock(conn, hash_refresh_token(refresh_token))
            if row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
                raise invalid
            if row.used_at is not None:
                await store.revoke_family(conn, row.family_id)
            else:
                await store.mark_used(conn, row.token_hash)
                member = await members.by_id(conn, row.member_id)
                if member is not None:
                    pair = await self.issue(conn, member_id=member.id, tier=member.tier,
                                            family_id=row.family_id)
        # Raised only after the commit, so that a revocation sticks.
        if pair is None:
            raise invalid
        return pair
