"""Dependencies the routers share: the service context, the signed-in member, cursors."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header

from services.common.auth import Member
from services.common.errors import validation_error
from services.common.inputs import Text
from services.common.web import context_of
from services.orders.context import Context

Ctx = Annotated[Context, Depends(context_of(Context))]


async def current_member(
    ctx: Ctx, authorization: Annotated[Text | None, Header()] = None
) -> Member:
    return await ctx.verifier.member(authorization)


CurrentMember = Annotated[Member, Depends(current_member)]


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque page token; clients pass it back unchanged."""
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The position inside a cursor, or 422 on `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise validation_error("cursor", "not a cursor returned by this endpoint") from exc
    if not isinstance(position, dict):
        raise validation_error("cursor", "not a cursor returned by this endpoint")
    return position
