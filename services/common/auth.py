"""Verifying member tokens (EdDSA JWTs from membership's JWKS) and API keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from services.common.errors import Problem, unauthorized

log = logging.getLogger(__name__)

ISSUER = "marketplace-membership"
AUDIENCE = "marketplace"
ALGORITHM = "EdDSA"  # pinned: a token naming any other algorithm is refused


@dataclass(frozen=True, slots=True)
class Member:
    id: uuid.UUID
    tier: str


@dataclass(frozen=True, slots=True)
class _Verified:
    claims: dict[str, Any]
    kid: str
    key: Any
    exp: float


class JwksVerifier:
    """Verifies access tokens against membership's JWKS, cached by `kid`.

    An unknown `kid` triggers one refetch (key rotation), at most every few seconds,
    so a flood of forged kids cannot turn into a flood of JWKS requests.

    A token that verified is remembered until it expires: a member's every request carries
    the same token, and the signature check is the costliest part of most requests. A
    remembered token is still refused once its key is retired or replaced, and after `exp`.
    """

    def __init__(self, jwks_url: str, *, refetch_every_s: float = 5.0,
                 remember: int = 20_000, clock: Callable[[], float] = time.time) -> None:
        self.jwks_url = jwks_url
        self.refetch_every_s = refetch_every_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._remember, self._clock = remember, clock
        self._verified: dict[str, _Verified] = {}

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.refetch_every_s and self._keys:
                return
            async with httpx.AsyncClient(timeout=3.0) as client:
                response = await client.get(self.jwks_url)
                response.raise_for_status()
            keys = {}
            for jwk in response.json().get("keys", []):
                if jwk.get("alg", ALGORITHM) == ALGORITHM and "kid" in jwk:
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def key_for(self, kid: str) -> Any:
        if kid not in self._keys:
            try:
                await self._refresh()
            except httpx.HTTPError as exc:
                log.warning("jwks fetch failed", extra={"url": self.jwks_url, "error": str(exc)})
                raise Problem(503, "overloaded", "Key service unavailable",
                              "could not fetch signing keys; retry shortly",
                              headers={"Retry-After": "1"}) from exc
        key = self._keys.get(kid)
        if key is None:
            raise unauthorized("token signed by an unknown or retired key")
        return key

    async def verify(self, token: str) -> dict[str, Any]:
        known = self._verified.get(token)
        if known is not None:
            # The key that signed it must still be the one trusted under its kid.
            if await self.key_for(known.kid) is known.key and self._clock() < known.exp:
                return known.claims
            del self._verified[token]
        return await self._verify(token)

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise unauthorized(f"token algorithm must be {ALGORITHM}")
        kid = str(header.get("kid", ""))
        key = await self.key_for(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("token expired; get a new one with the refresh token") from exc
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from exc
        if len(self._verified) >= self._remember:
            self._verified.clear()  # forgetting only costs a signature check
        self._verified[token] = _Verified(claims, kid, key, float(claims["exp"]))
        return claims

    async def member(self, authorization: str | None) -> Member:
        """The member behind an `Authorization: Bearer` header, or 401."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise unauthorized("missing bearer token; sign in with POST /v1/auth/token")
        claims = await self.verify(authorization[7:].strip())
        if claims.get("typ") != "access":
            raise unauthorized("not an access token")
        try:
            member_id = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise unauthorized("token subject is not a member id") from exc
        return Member(id=member_id, tier=str(claims.get("tier", "BRONZE")))


def check_admin_key(presented: str | None, expected: str) -> None:
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise unauthorized("admin endpoints need a valid X-Admin-Key header")


def new_api_key(prefix: str = "mk") -> str:
    """A high-entropy API key; only its hash is stored."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(key.encode()).hexdigest()
