"""Verifying member tokens (EdDSA JWTs from membership's JWKS) and API keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from services.common.errors import Problem, unauthorized

if TYPE_CHECKING:
    from services.common.settings import JwksClientSettings

log = logging.getLogger(__name__)

ISSUER = "marketplace-membership"
AUDIENCE = "marketplace"
ALGORITHM = "EdDSA"  # pinned: a token naming any other algorithm is refused
# With no keys to serve from, one JWKS fetch a second at most (the 503 says Retry-After: 1).
UNAVAILABLE_RETRY_S = 1.0


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


@dataclass(frozen=True, slots=True)
class _Key:
    jwk: dict[str, Any]
    key: Any


def cache_max_age(cache_control: str | None) -> float | None:
    """Seconds a response may be reused by its `Cache-Control`; None when it does not say."""
    directives = [d.strip().lower() for d in (cache_control or "").split(",")]
    for directive in directives:
        name, _, value = directive.partition("=")
        if name.strip() == "max-age":
            value = value.strip().strip('"')
            return float(value) if value.isdigit() else None
    # Not to be reused without asking again: as fresh as the refetch rate limit allows.
    return 0.0 if {"no-cache", "no-store"} & set(directives) else None


class JwksVerifier:
    """Verifies access tokens against membership's JWKS.

    The fetched key set is trusted for its max age: the response's `Cache-Control: max-age`,
    at most `max_age_ceiling_s`, or `max_age_s` when it gives none (and never less than
    `refetch_every_s`, which bounds how often it is refetched anyway). Once stale, the next
    verification refetches it, so a key that membership retires is refused here (remembered
    tokens included) about one max age later. If that refetch fails, the stale set stays in
    use for `stale_grace_s` more (a membership outage must not sign every member out); past
    that, requests answer 503.

    An unknown `kid` also triggers a refetch (key rotation). One fetch runs at a time, and
    while a usable set is held another starts at most `refetch_every_s` after the last one
    ended, so a flood of forged kids cannot turn into a flood of JWKS requests.

    A token that verified is remembered until it expires: a member's every request carries
    the same token, and the signature check is the costliest part of most requests. A
    remembered token is still refused once its key is retired or replaced, and after `exp`.
    """

    def __init__(self, jwks_url: str, *, max_age_s: float = 60.0,
                 max_age_ceiling_s: float = 300.0, stale_grace_s: float = 600.0,
                 refetch_every_s: float = 5.0, remember: int = 20_000,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.jwks_url = jwks_url
        self.max_age_s, self.max_age_ceiling_s = max_age_s, max_age_ceiling_s
        self.stale_grace_s, self.refetch_every_s = stale_grace_s, refetch_every_s
        self._keys: dict[str, _Key] = {}
        # Cache ages run on a monotonic clock: a wall-clock step must not extend trust.
        self._monotonic, self._transport = monotonic, transport
        self._fresh_until = self._usable_until = self._attempted_at = -math.inf
        self._lock = asyncio.Lock()
        self._remember, self._clock = remember, clock
        self._verified: dict[str, _Verified] = {}

    @classmethod
    def from_settings(cls, settings: JwksClientSettings) -> JwksVerifier:
        return cls(settings.jwks_url, max_age_s=settings.jwks_max_age_s,
                   max_age_ceiling_s=settings.jwks_max_age_ceiling_s,
                   stale_grace_s=settings.jwks_stale_grace_s)

    def _wants_fetch(self, kid: str) -> bool:
        now = self._monotonic()
        since = now - self._attempted_at
        if now >= self._usable_until:
            # Nothing to serve from: try again as soon as the 503 tells clients to.
            return since >= UNAVAILABLE_RETRY_S
        if since < self.refetch_every_s:
            return False
        return now >= self._fresh_until or kid not in self._keys

    async def _refresh(self, kid: str) -> None:
        async with self._lock:
            # Single flight: whoever held the lock may have just answered our question.
            if not self._wants_fetch(kid):
                return
            try:
                keys, max_age = await self._fetch()
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                grace_left = max(self._usable_until - self._monotonic(), 0.0)
                message = ("jwks refetch failed; trusting the stale keys a while longer"
                           if grace_left else "jwks fetch failed; no keys to verify tokens with")
                log.warning(message, extra={"url": self.jwks_url, "error": str(exc),
                                            "grace_left_s": round(grace_left, 1)})
                return
            finally:
                # From the end of the attempt: waiters on a slow failure must not retry it.
                self._attempted_at = self._monotonic()
            self._keys = keys
            self._fresh_until = self._attempted_at + max_age
            self._usable_until = self._fresh_until + self.stale_grace_s

    async def _fetch(self) -> tuple[dict[str, _Key], float]:
        """The published keys and how long they may be trusted."""
        async with httpx.AsyncClient(timeout=3.0, transport=self._transport) as client:
            response = await client.get(self.jwks_url)
            response.raise_for_status()
        body = response.json()
        published = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(published, list):
            raise ValueError("the response is not a JWK set")
        keys: dict[str, _Key] = {}
        for jwk in published:
            if not isinstance(jwk, dict) or jwk.get("alg", ALGORITHM) != ALGORITHM:
                continue
            kid = jwk.get("kid")
            if not isinstance(kid, str):
                continue
            old = self._keys.get(kid)
            # The same key object for an unchanged JWK keeps remembered tokens remembered.
            keys[kid] = old if old is not None and old.jwk == jwk else _Key(
                jwk, jwt.PyJWK(jwk, algorithm=ALGORITHM).key)
        max_age = cache_max_age(response.headers.get("cache-control"))
        max_age = min(self.max_age_s if max_age is None else max_age, self.max_age_ceiling_s)
        # No set is refetched sooner than the rate limit allows anyway; calling it fresh that
        # long keeps a zero max age (and zero grace) from refusing every request.
        return keys, max(max_age, self.refetch_every_s)

    async def key_for(self, kid: str) -> Any:
        if self._wants_fetch(kid):
            await self._refresh(kid)
        if self._monotonic() >= self._usable_until:
            raise Problem(503, "overloaded", "Key service unavailable",
                          "could not fetch signing keys; retry shortly",
                          headers={"Retry-After": "1"})
        known = self._keys.get(kid)
        if known is None:
            raise unauthorized("token signed by an unknown or retired key")
        return known.key

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
