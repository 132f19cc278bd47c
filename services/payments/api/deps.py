"""FastAPI dependencies: the pool, the signed-in member, the admin key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from services.common import auth


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the routes need, set on `app.state.ctx` by the composition root."""

    pool: asyncpg.Pool
    verifier: auth.JwksVerifier
    admin_api_key: str
    currency: str


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def _connection(
    ctx: Annotated[ApiContext, Depends(_ctx)],
) -> AsyncIterator[asyncpg.Connection]:
    async with ctx.pool.acquire() as conn:
        yield conn


async def _member(
    ctx: Annotated[ApiContext, Depends(_ctx)],
    authorization: Annotated[str | None, Header()] = None,
) -> auth.Member:
    return await ctx.verifier.member(authorization)


def _admin(
    ctx: Annotated[ApiContext, Depends(_ctx)],
    x_admin_key: Annotated[str | None, Header()] = None,
) -> None:
    auth.check_admin_key(x_admin_key, ctx.admin_api_key)


Context = Annotated[ApiContext, Depends(_ctx)]
Conn = Annotated[asyncpg.Connection, Depends(_connection)]
CurrentMember = Annotated[auth.Member, Depends(_member)]
Admin = Depends(_admin)
