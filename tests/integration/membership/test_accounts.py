"""Registration, sign-in, the member's profile and refresh-token rotation over real HTTP."""

from __future__ import annotations

import uuid

from services.membership.domain.profile import age_band
from tests.helpers import eventually
from tests.integration.membership.conftest import Running, StartMembership
from tests.integration.membership.factories import (
    PASSWORD,
    bearer,
    member_form,
    register,
    sign_in,
    stream_events,
)


async def test_register_answers_201_with_the_new_member(membership: Running) -> None:
    form = member_form(email="  Zhang.Wei@Example.CN ")

    response = await membership.http.post("/v1/members", json=form)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {"id": body["id"], "email": "zhang.wei@example.cn", "name": "Wang Fang",
                    "tier": "BRONZE", "points_balance": 0}
    uuid.UUID(body["id"])


async def test_register_lists_every_field_error_at_once(membership: Running) -> None:
    form = member_form(email="not-an-email", password="short", birth_year=2024, region="XX")

    response = await membership.http.post("/v1/members", json=form)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert {e["field"] for e in problem["errors"]} == {"email", "password", "birth_year", "region"}
    assert all(e["message"] for e in problem["errors"])


async def test_a_duplicate_email_answers_409_whatever_its_case(membership: Running) -> None:
    await register(membership.http, email="li.na@example.cn")

    response = await membership.http.post(
        "/v1/members", json=member_form(email="LI.NA@Example.cn")
    )

    assert response.status_code == 409
    assert response.json()["status"] == 409


async def test_member_registered_event_carries_demographics_but_no_email(
    membership: Running,
) -> None:
    member = await register(membership.http, email="chen.jie@example.cn", birth_year=1990,
                            region="cn-gd", gender="male")

    events = await eventually(
        lambda: stream_events(membership.bus, "membership.member.registered"),
        what="membership.member.registered published",
    )

    assert len(events) == 1
    headers, message = events[0]
    assert message.member_id == member["id"]
    assert (message.region, message.gender) == ("CN-GD", "male")
    assert message.age_band == age_band(1990, message.registered_at.ToDatetime().year)
    raw = message.SerializeToString() + repr(headers).encode()
    assert b"chen.jie" not in raw and b"example.cn" not in raw and b"argon2" not in raw


async def test_sign_in_gives_a_token_pair_that_opens_the_profile(membership: Running) -> None:
    member = await register(membership.http)

    tokens = await sign_in(membership.http, member["email"])
    response = await membership.http.get("/v1/members/me", headers=bearer(tokens["access_token"]))

    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert tokens["refresh_token"]
    assert response.status_code == 200
    assert response.json() == {
        "id": member["id"], "email": member["email"], "name": "Wang Fang", "tier": "BRONZE",
        "points_balance": 0, "lifetime_spend": {"amount": 0, "currency": "CNY"},
    }


async def test_wrong_password_and_unknown_email_get_the_same_401(membership: Running) -> None:
    member = await register(membership.http)

    wrong = await membership.http.post(
        "/v1/auth/token", json={"email": member["email"], "password": PASSWORD + "x"}
    )
    unknown = await membership.http.post(
        "/v1/auth/token", json={"email": "nobody@example.cn", "password": PASSWORD}
    )

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert "access_token" not in wrong.json()


async def test_profile_without_a_token_is_401(membership: Running) -> None:
    response = await membership.http.get("/v1/members/me")

    assert response.status_code == 401
    assert response.json()["type"].endswith("/unauthorized")


async def test_refresh_rotates_and_a_reused_refresh_token_is_refused(membership: Running) -> None:
    member = await register(membership.http)
    first = await sign_in(membership.http, member["email"])

    rotated = await membership.http.post(
        "/v1/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = await membership.http.get("/v1/members/me", headers=bearer(second["access_token"]))
    assert me.json()["id"] == member["id"]

    replay = await membership.http.post(
        "/v1/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert replay.status_code == 401
    # The replay revoked the family: the token handed out by the rotation is dead too.
    after_theft = await membership.http.post(
        "/v1/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
    )
    assert after_theft.status_code == 401


async def test_refresh_tokens_are_stored_only_as_hashes(membership: Running) -> None:
    member = await register(membership.http)
    tokens = await sign_in(membership.http, member["email"])

    async with membership.service.infra.pool.acquire() as conn:
        stored = await conn.fetch("SELECT token_hash FROM refresh_tokens")
        password_hash = await conn.fetchval("SELECT password_hash FROM members")

    assert len(stored) == 1
    assert tokens["refresh_token"] not in stored[0]["token_hash"]
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_sign_in_attempts_are_rate_limited_per_email(
    start_membership: StartMembership,
) -> None:
    membership = await start_membership(login_attempts_per_email=3)
    member = await register(membership.http)
    wrong = {"email": member["email"], "password": "Wrong-password-1"}

    answers = [
        (await membership.http.post("/v1/auth/token", json=wrong)).status_code for _ in range(3)
    ]
    limited = await membership.http.post("/v1/auth/token", json=wrong)
    other = await membership.http.post(
        "/v1/auth/token", json={"email": "other@example.cn", "password": "x"}
    )

    assert answers == [401, 401, 401]
    assert limited.status_code == 429
    assert limited.json()["type"].endswith("/rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert other.status_code == 401  # another email still gets an answer


async def test_jwks_publishes_the_signing_key(membership: Running) -> None:
    response = await membership.http.get("/.well-known/jwks.json")

    keys = response.json()["keys"]
    assert len(keys) == 1
    assert {k: keys[0][k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig"}
    assert keys[0]["kid"] and "d" not in keys[0]


async def test_each_invalid_field_is_named_in_the_422(membership: Running) -> None:
    # Checked by the domain rules: one entry per field, whatever else is wrong.
    form = member_form(email="li@", password="password", name=" ", birth_year=1899,
                       region="CN-XX", gender="unknown")
    ruled = await membership.http.post("/v1/members", json=form)
    # Checked by the request schema: a missing field and a mistyped one.
    shaped = await membership.http.post(
        "/v1/members", json={k: v for k, v in member_form(birth_year="nineteen").items()
                             if k != "region"}
    )

    assert ruled.status_code == shaped.status_code == 422
    assert [e["field"] for e in ruled.json()["errors"]] == [
        "email", "password", "password", "name", "birth_year", "region", "gender"]
    assert {e["field"] for e in shaped.json()["errors"]} == {"birth_year", "region"}
    assert all(e["message"] for e in ruled.json()["errors"] + shaped.json()["errors"])
    async with membership.service.infra.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM members") == 0


async def test_sign_in_attempts_are_rate_limited_per_client_address(
    start_membership: StartMembership,
) -> None:
    membership = await start_membership(login_attempts_per_client=3)
    member = await register(membership.http)
    # Different emails each time: only the client address ties the attempts together.
    spray = [{"email": f"guess{i}@example.cn", "password": "Wrong-password-1"} for i in range(2)]

    answers = [
        (await membership.http.post("/v1/auth/token", json=body)).status_code for body in spray
    ]
    allowed = await membership.http.post(
        "/v1/auth/token", json={"email": member["email"], "password": PASSWORD})
    limited = await membership.http.post(
        "/v1/auth/token", json={"email": member["email"], "password": PASSWORD})

    assert answers == [401, 401]
    assert allowed.status_code == 200
    assert limited.status_code == 429
    assert "client" in limited.json()["detail"]
    assert int(limited.headers["Retry-After"]) >= 1
