"""Forged and stale access tokens all answer 401 on /v1/members/me."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common import auth
from services.membership.keys import public_jwk
from tests.helpers import eventually
from tests.infra import free_port
from tests.integration.membership.conftest import Running, StartMembership, write_key
from tests.integration.membership.factories import bearer, register, sign_in
from tests.integration.orders.harness import Stack


def _claims(member_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": member_id, "typ": "access",
              "tier": "PLATINUM", "iat": now, "exp": now + 600}
    return claims | changes


def _sign(key: Ed25519PrivateKey, claims: dict[str, Any]) -> str:
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _profile_status(membership: Running, token: str) -> int:
    response = await membership.http.get("/v1/members/me", headers=bearer(token))
    return response.status_code


@pytest.fixture
async def member_id(membership: Running) -> str:
    member = await register(membership.http)
    return str(member["id"])


async def test_a_correctly_signed_token_is_accepted(membership: Running, member_id: str) -> None:
    # The control for the attacks below: the same construction with honest claims works.
    assert await _profile_status(membership, _sign(membership.key, _claims(member_id))) == 200


async def test_an_expired_token_is_refused(membership: Running, member_id: str) -> None:
    past = int(time.time()) - 3600
    token = _sign(membership.key, _claims(member_id, iat=past - 900, exp=past))

    assert await _profile_status(membership, token) == 401


async def test_a_token_for_another_audience_is_refused(membership: Running, member_id: str) -> None:
    token = _sign(membership.key, _claims(member_id, aud="some-other-app"))

    assert await _profile_status(membership, token) == 401


async def test_a_token_from_another_issuer_is_refused(membership: Running, member_id: str) -> None:
    token = _sign(membership.key, _claims(member_id, iss="evil"))

    assert await _profile_status(membership, token) == 401


async def test_an_unsigned_alg_none_token_is_refused(membership: Running, member_id: str) -> None:
    kid = public_jwk(membership.key.public_key())["kid"]
    token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims(member_id))}."

    assert await _profile_status(membership, token) == 401


async def test_hs256_signed_with_the_public_key_is_refused(
    membership: Running, member_id: str
) -> None:
    public = membership.key.public_key()
    kid = public_jwk(public)["kid"]
    for secret in (
        public.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ):
        # PyJWT itself refuses to HMAC with a PEM key, so build the token by hand.
        header, body = _b64({"alg": "HS256", "typ": "JWT", "kid": kid}), _b64(_claims(member_id))
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        token = f"{header}.{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

        assert await _profile_status(membership, token) == 401


async def test_a_refresh_token_is_not_an_access_token(membership: Running) -> None:
    member = await register(membership.http)
    tokens = await sign_in(membership.http, member["email"])
    wrong_typ = _sign(membership.key, _claims(str(member["id"]), typ="refresh"))

    assert await _profile_status(membership, tokens["refresh_token"]) == 401
    assert await _profile_status(membership, wrong_typ) == 401


async def test_a_token_from_an_unpublished_key_is_refused(
    membership: Running, member_id: str
) -> None:
    stranger = Ed25519PrivateKey.generate()

    assert await _profile_status(membership, _sign(stranger, _claims(member_id))) == 401


async def test_rotation_previous_keys_verify_and_retired_keys_do_not(
    start_membership: StartMembership, tmp_path: Path
) -> None:
    previous, retired = tmp_path / "previous.pem", tmp_path / "retired.pem"
    previous_key, retired_key = write_key(previous), write_key(retired)
    membership = await start_membership(
        jwt_previous_key_files=f"{previous}", jwt_retired_key_files=f"{retired}"
    )
    member = await register(membership.http)

    response = await membership.http.get("/.well-known/jwks.json")
    # The other services trust the keys this long: a retired key's window elsewhere.
    assert response.headers["cache-control"] == "public, max-age=60"
    published = {k["kid"] for k in response.json()["keys"]}
    retired_kid = public_jwk(retired_key.public_key())["kid"]
    assert public_jwk(previous_key.public_key())["kid"] in published
    assert retired_kid not in published
    assert len(published) == 2
    assert await _profile_status(membership, _sign(previous_key, _claims(member["id"]))) == 200
    assert await _profile_status(membership, _sign(retired_key, _claims(member["id"]))) == 401


async def test_a_running_orders_service_refuses_a_retired_key_once_the_jwks_max_age_passed(
    start_membership: StartMembership, nats_url: str, tmp_path: Path
) -> None:
    leaked_file = tmp_path / "leaked.pem"
    leaked = write_key(leaked_file)
    before = await start_membership(jwt_previous_key_files=f"{leaked_file}")
    stolen = _sign(leaked, _claims(str((await register(before.http))["id"])))
    orders = Stack(db=before.db, nats_url=nats_url, tmp=tmp_path, payments_grpc_port=free_port())
    try:
        # A 1 s ceiling: the verifier then refetches as often as its rate limit allows (5 s).
        await orders.start_orders(jwks_url=before.jwks_url, jwks_max_age_ceiling_s=1.0)
        assert orders.orders is not None

        async def cart_status() -> int:
            assert orders.orders is not None
            return (await orders.orders.get("/v1/cart/items", headers=bearer(stolen))).status_code

        assert await cart_status() == 200
        # The compromise: membership restarts, same address, with the leaked key retired.
        await before.stop()
        after = await start_membership(http_port=before.settings.http_port,
                                       jwt_retired_key_files=f"{leaked_file}")
        assert await _profile_status(after, stolen) == 401

        await eventually(cart_status, until=lambda status: status == 401, timeout_s=30,
                         what="orders refusing the retired key")
    finally:
        await orders.stop()


async def test_the_shared_verifier_accepts_issued_tokens_via_the_jwks(membership: Running) -> None:
    # What orders, payments and analytics do: verify against the published JWKS over HTTP.
    member = await register(membership.http)
    tokens = await sign_in(membership.http, member["email"])

    who = await auth.JwksVerifier(membership.jwks_url).member(f"Bearer {tokens['access_token']}")

    assert (str(who.id), who.tier) == (member["id"], "BRONZE")
