"""What the routes need, handed in by the composition root (`web.create_app(context=)`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from services.common import auth
from services.common.inputs import Text
from services.common.ratelimit import SharedLimit
from services.common.web import context_of
from services.membership.keys import LocalVerifier
from services.membership.passwords import Passwords
from services.membership.sessions import TokenIssuer


@dataclass(frozen=True)
class Context:
    pool: asyncpg.Pool
    passwords: Passwords
    issuer: TokenIssuer
    verifier: LocalVerifier
    logins_per_email: SharedLimit
    logins_per_client: SharedLimit


Ctx = Annotated[Context, Depends(context_of(Context))]


async def current_member(
    ctx: Ctx, authorization: Annotated[Text | None, Header()] = None
) -> auth.Member:
    return await ctx.verifier.member(authorization)


CurrentMember = Annotated[auth.Member, Depends(current_member)]


async def client_address(request: Request) -> str:
    # The peer address; behind a proxy this is the proxy (trusted forwarding is not set up).
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(client_address)]
