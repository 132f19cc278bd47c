"""The JWKS key set expires: retired keys stop verifying elsewhere, outages are ridden out."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common import auth
from services.common.errors import Problem
from services.membership.keys import public_jwk

JWKS_URL = "http://membership.test/.well-known/jwks.json"


class Monotonic:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


class FakeMembership:
    """The JWKS endpoint: publishes `keys` with `cache_control`, or fails while `down`."""

    def __init__(self, clock: Monotonic, *keys: Ed25519PrivateKey) -> None:
        self.clock, self.keys = clock, list(keys)
        self.cache_control: str | None = "public, max-age=60"
        self.down = False
        self.fetches = 0
        self.gate: asyncio.Event | None = None  # while set up and not set, fetches wait
        self.fetch_takes_s = 0.0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        self.clock.now += self.fetch_takes_s
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        headers = {"cache-control": self.cache_control} if self.cache_control else {}
        body = {"keys": [public_jwk(k.public_key()) for k in self.keys]}
        return httpx.Response(200, json=body, headers=headers)

    def verifier(self, **options: Any) -> auth.JwksVerifier:
        return auth.JwksVerifier(JWKS_URL, monotonic=self.clock,
                                 transport=httpx.MockTransport(self.handle), **options)


def token(key: Ed25519PrivateKey, kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "typ": "access", "tier": "GOLD", "iss": auth.ISSUER,
              "aud": auth.AUDIENCE, "iat": now, "exp": now + 900}
    kid = kid or public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm=auth.ALGORITHM, headers={"kid": kid})


async def until(condition: Callable[[], bool]) -> None:
    """Yields to the other tasks until `condition` holds (bounded: a failure, never a hang)."""
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the verifications never got that far")


async def status(verifier: auth.JwksVerifier, access_token: str) -> int:
    """What a request carrying the token is answered: 200, or the Problem's status."""
    try:
        await verifier.member(f"Bearer {access_token}")
    except Problem as problem:
        return problem.status
    return 200


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def old() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def new() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def membership(clock: Monotonic, old: Ed25519PrivateKey,
               new: Ed25519PrivateKey) -> FakeMembership:
    return FakeMembership(clock, new, old)


async def test_a_retired_key_is_refused_after_max_age_even_for_a_remembered_token(
    membership: FakeMembership, clock: Monotonic, old: Ed25519PrivateKey, decoded: list[str]
) -> None:
    verifier, stolen = membership.verifier(), token(old)
    assert await status(verifier, stolen) == 200
    membership.keys.remove(old)  # membership restarted with `old` retired
    clock.now += 60

    assert await status(verifier, stolen) == 401
    assert decoded == [stolen]  # refused from memory: the key check comes first
    assert await status(verifier, token(old)) == 401  # a freshly minted one too


async def test_a_retired_key_is_still_accepted_before_max_age(
    membership: FakeMembership, clock: Monotonic, old: Ed25519PrivateKey
) -> None:
    verifier, stolen = membership.verifier(), token(old)
    assert await status(verifier, stolen) == 200
    membership.keys.remove(old)
    clock.now += 59

    assert await status(verifier, stolen) == 200
    assert await status(verifier, token(old)) == 200
    assert membership.fetches == 1


@pytest.mark.parametrize(("cache_control", "options", "max_age"), [
    ("public, max-age=20", {}, 20),
    ("public, max-age=86400", {"max_age_ceiling_s": 300.0}, 300),
    (None, {"max_age_s": 30.0}, 30),
], ids=["header-honoured", "header-capped", "no-header-default"])
async def test_the_key_set_lives_for_the_responses_max_age_within_the_ceiling(
    membership: FakeMembership, clock: Monotonic, old: Ed25519PrivateKey,
    cache_control: str | None, options: dict[str, float], max_age: int,
) -> None:
    membership.cache_control = cache_control
    verifier = membership.verifier(**options)
    assert await status(verifier, token(old)) == 200
    membership.keys.remove(old)

    clock.now += max_age - 1
    assert await status(verifier, token(old)) == 200
    clock.now += 1
    assert await status(verifier, token(old)) == 401


async def test_a_failed_refetch_keeps_the_old_keys_for_the_grace_then_answers_503(
    membership: FakeMembership, clock: Monotonic, new: Ed25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier, member_token = membership.verifier(stale_grace_s=600.0), token(new)
    assert await status(verifier, member_token) == 200
    membership.down = True

    clock.now += 60
    with caplog.at_level(logging.WARNING, logger=auth.__name__):
        assert await status(verifier, member_token) == 200
    assert membership.fetches == 2
    assert any("stale keys" in r.getMessage() for r in caplog.records)
    clock.now += 599
    assert await status(verifier, member_token) == 200
    clock.now += 1
    assert await status(verifier, member_token) == 503

    membership.down = False
    clock.now += auth.UNAVAILABLE_RETRY_S
    assert await status(verifier, member_token) == 200


async def test_concurrent_verifications_share_one_fetch(
    membership: FakeMembership, clock: Monotonic, new: Ed25519PrivateKey
) -> None:
    verifier, tokens = membership.verifier(), [token(new) for _ in range(20)]
    membership.gate = asyncio.Event()
    first = asyncio.gather(*(status(verifier, t) for t in tokens))
    await until(lambda: membership.fetches >= 1)
    membership.gate.set()
    assert await first == [200] * 20

    membership.gate = asyncio.Event()
    clock.now += 60
    after_max_age = asyncio.gather(*(status(verifier, t) for t in tokens))
    await until(lambda: membership.fetches >= 2)
    membership.gate.set()
    assert await after_max_age == [200] * 20
    assert membership.fetches == 2


async def test_a_slow_failing_fetch_is_shared_too_not_retried_by_each_waiter(
    membership: FakeMembership, new: Ed25519PrivateKey
) -> None:
    verifier = membership.verifier()
    membership.down, membership.fetch_takes_s = True, 3.0  # as a connect timeout would
    membership.gate = asyncio.Event()
    answers = asyncio.gather(*(status(verifier, token(new)) for _ in range(20)))
    await until(lambda: membership.fetches >= 1)
    membership.gate.set()

    assert await answers == [503] * 20
    assert membership.fetches == 1


async def test_a_flood_of_unknown_kids_causes_one_refetch_per_interval(
    membership: FakeMembership, clock: Monotonic, new: Ed25519PrivateKey
) -> None:
    verifier = membership.verifier(refetch_every_s=5.0)
    assert await status(verifier, token(new)) == 200
    forger = Ed25519PrivateKey.generate()

    for _ in range(50):
        assert await status(verifier, token(forger, kid=uuid.uuid4().hex)) == 401
    assert membership.fetches == 1
    clock.now += 5
    for _ in range(50):
        assert await status(verifier, token(forger, kid=uuid.uuid4().hex)) == 401
    assert membership.fetches == 2


async def test_a_newly_published_key_is_fetched_when_its_kid_is_first_seen(
    membership: FakeMembership, clock: Monotonic, new: Ed25519PrivateKey
) -> None:
    verifier = membership.verifier(refetch_every_s=5.0)
    assert await status(verifier, token(new)) == 200
    rotated = Ed25519PrivateKey.generate()
    membership.keys.insert(0, rotated)
    clock.now += 5

    assert await status(verifier, token(rotated)) == 200
    assert membership.fetches == 2


def test_cache_control_max_age_is_read_from_the_header() -> None:
    assert auth.cache_max_age("public, max-age=60") == 60
    assert auth.cache_max_age('Public, Max-Age="5"') == 5
    assert auth.cache_max_age("no-store") == 0
    assert auth.cache_max_age("public") is None
    assert auth.cache_max_age("max-age=soon") is None
    assert auth.cache_max_age(None) is None
