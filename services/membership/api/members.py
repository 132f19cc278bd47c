"""Registration, the member's own profile and their points ledger."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Query

from services.common.errors import not_found, problems, validation_error
from services.common.inputs import QueryInt64, Text, parse_int64
from services.membership import accounts
from services.membership.api.deps import Ctx, CurrentMember
from services.membership.api.models import (
    MemberOut,
    MemberProfile,
    Money,
    PointsEntry,
    PointsPage,
    RegisterRequest,
)
from services.membership.domain.profile import Registration
from services.membership.store import members
from services.membership.store import points as points_store

router = APIRouter(prefix="/v1/members", tags=["members"])


@router.post("", status_code=201, response_model=MemberOut, responses=problems(409),
             summary="Register a member", operation_id="registerMember")
async def register(body: RegisterRequest, ctx: Ctx) -> MemberOut:
    member = await accounts.register(
        pool=ctx.pool, passwords=ctx.passwords, form=Registration(**body.model_dump())
    )
    return MemberOut(id=member.id, email=member.email, name=member.name, tier=member.tier,
                     points_balance=member.points_balance)


@router.get("/me", response_model=MemberProfile, responses=problems(404),
            summary="The signed-in member's profile", operation_id="getMyProfile")
async def me(who: CurrentMember, ctx: Ctx) -> MemberProfile:
    member = await members.by_id(ctx.pool, who.id)
    if member is None:
        raise not_found("member")
    return MemberProfile(
        id=member.id, email=member.email, name=member.name, tier=member.tier,
        points_balance=member.points_balance, lifetime_spend=Money(amount=member.lifetime_spend),
    )


@router.get("/me/points", response_model=PointsPage,
            summary="The signed-in member's points ledger", operation_id="listMyPoints")
async def my_points(
    who: CurrentMember,
    ctx: Ctx,
    limit: Annotated[QueryInt64, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=64)] = None,
) -> PointsPage:
    """The member's points ledger, newest first."""
    entries = await points_store.ledger_page(
        ctx.pool, who.id, limit=limit + 1, before_id=_decode_cursor(cursor)
    )
    page = entries[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(entries) > limit else None
    return PointsPage(
        items=[
            PointsEntry(id=e.id, delta=e.delta, balance_after=e.balance_after, reason=e.reason,
                        order_id=e.order_id, created_at=e.created_at)
            for e in page
        ],
        next_cursor=next_cursor,
    )


def _encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"p:{entry_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise validation_error("cursor", "not a cursor this API returned") from exc
    entry_id = parse_int64(value) if prefix == "p" else None
    if entry_id is None:  # int() would take " 1", "1_0" and digits past 64 bits
        raise validation_error("cursor", "not a cursor this API returned")
    return entry_id
