"""Registering members and signing them in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.events.v1 import events_pb2 as ev

from services.common import outbox
from services.common.errors import Problem, unauthorized
from services.membership.domain import profile
from services.membership.passwords import Passwords
from services.membership.sessions import TokenIssuer, TokenPair
from services.membership.store import members
from services.membership.store.members import EmailTaken, MemberRow

SOURCE = "membership"


def invalid_registration(problems: list[profile.FieldError]) -> Problem:
    errors = [{"field": p.field, "message": p.message} for p in problems]
    return Problem(
        422, "validation-error", "Validation error",
        "; ".join(f"{p.field}: {p.message}" for p in problems),
        errors=errors, field=problems[0].field,
    )


async def register(
    *, pool: asyncpg.Pool, passwords: Passwords, form: profile.Registration
) -> MemberRow:
    """Create the member and publish `membership.member.registered` in one transaction."""
    now = datetime.now(UTC)
    problems = profile.validate_registration(form, current_year=now.year)
    if problems:
        raise invalid_registration(problems)
    clean = profile.normalize_registration(form)
    if await members.by_email(pool, clean.email) is not None:  # spare the hash on a retry
        raise _email_taken()
    password_hash = await passwords.hash(clean.password)
    member_id = uuid.uuid4()
    registered_at = Timestamp()
    registered_at.FromDatetime(now)
    event = ev.MemberRegistered(
        member_id=str(member_id),
        age_band=profile.age_band(clean.birth_year, now.year),
        region=clean.region,
        gender=clean.gender or "",
        registered_at=registered_at,
    )
    async with pool.acquire() as conn, conn.transaction():
        try:
            member = await members.insert(
                conn, member_id=member_id, email=clean.email, password_hash=password_hash,
                name=clean.name, birth_year=clean.birth_year, region=clean.region,
                gender=clean.gender,
            )
        except EmailTaken as exc:
            raise _email_taken() from exc
        await outbox.add_event(conn, source=SOURCE, subject="membership.member.registered",
                               aggregate_id=str(member_id), message=event)
    return member


def _email_taken() -> Problem:
    return Problem(409, "conflict", "Conflict", "a member with this email already exists",
                   field="email")


async def sign_in(
    *,
    pool: asyncpg.Pool,
    passwords: Passwords,
    issuer: TokenIssuer,
    email: str,
    password: str,
) -> TokenPair:
    """A token pair for the right email and password; one same 401 for every wrong pair."""
    member = await members.by_email(pool, profile.normalize_email(email))
    # An unknown email still costs a hash check: the answer time does not tell it apart.
    if not await passwords.verify(member.password_hash if member else None, password):
        raise unauthorized("email or password is wrong")
    assert member is not None
    if passwords.needs_rehash(member.password_hash):  # parameters were raised since
        await members.set_password_hash(pool, member.id, await passwords.hash(password))
    return await issuer.issue(pool, member_id=member.id, tier=member.tier)
