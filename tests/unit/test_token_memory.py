"""Verified tokens are remembered until they expire, never past their key's retirement."""

from __future__ import annotations

import uuid
from datetime import datetime, tzinfo
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common import auth
from services.common.errors import Problem


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class KeysInHand(auth.JwksVerifier):
    """The shared rules with the trusted keys in a dict (as membership's LocalVerifier)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__("local:test", clock=clock)
        self.trusted: dict[str, Any] = {}

    async def key_for(self, kid: str) -> Any:
        if kid not in self.trusted:
            raise auth.unauthorized("token signed by an unknown or retired key")
        return self.trusted[kid]


def _token(key: Ed25519PrivateKey, kid: str, *, exp: float) -> str:
    claims = {"sub": str(uuid.uuid4()), "typ": "access", "tier": "GOLD", "iss": auth.ISSUER,
              "aud": auth.AUDIENCE, "iat": int(exp) - 900, "exp": int(exp)}
    return jwt.encode(claims, key, algorithm=auth.ALGORITHM, headers={"kid": kid})


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch,
          decoded: list[str]) -> tuple[KeysInHand, Ed25519PrivateKey, list[str]]:
    clock = Clock()

    class Now(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Now:  # type: ignore[override]
            return cls.fromtimestamp(clock.now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Now)  # PyJWT's own exp check, same clock
    verifier = KeysInHand(clock)
    signing = Ed25519PrivateKey.generate()
    verifier.trusted["k1"] = signing.public_key()
    return verifier, signing, decoded


async def test_a_verified_token_is_not_checked_again(setup: Any) -> None:
    verifier, signing, decoded = setup
    token = _token(signing, "k1", exp=verifier._clock() + 900)
    first = await verifier.member(f"Bearer {token}")
    again = await verifier.member(f"Bearer {token}")
    assert first == again and first.tier == "GOLD"
    assert decoded == [token]


async def _remembered(setup: Any) -> tuple[KeysInHand, str]:
    """A verifier that has just verified (and so remembers) a fresh token."""
    verifier, signing, _ = setup
    token = _token(signing, "k1", exp=verifier._clock() + 900)
    await verifier.verify(token)
    return verifier, token


async def test_a_remembered_token_is_refused_once_its_key_is_retired(setup: Any) -> None:
    verifier, token = await _remembered(setup)
    del verifier.trusted["k1"]
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401 and "retired" in refused.value.detail


async def test_a_remembered_token_is_refused_when_its_kid_names_another_key(setup: Any) -> None:
    verifier, token = await _remembered(setup)
    verifier.trusted["k1"] = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401


async def test_a_remembered_token_is_refused_once_it_expires(setup: Any) -> None:
    verifier, token = await _remembered(setup)
    verifier._clock.now += 901
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401 and "expired" in refused.value.detail


async def test_a_tampered_copy_of_a_remembered_token_is_still_refused(setup: Any) -> None:
    verifier, token = await _remembered(setup)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(Problem) as refused:
        await verifier.verify(forged)
    assert refused.value.status == 401
