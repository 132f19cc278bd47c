"""FastAPI dependencies: the pool, the signed-in member, the admin key, a merchant's key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header

from services.common import auth, errors
from services.common.inputs import Text
from services.common.web import context_of
from services.payments import merchants, service

# Keys are ~50 characters; anything much longer is not one (and is not worth hashing).
MAX_API_KEY_LENGTH = 256


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the routes need, handed in by the composition root (`web.create_app(context=)`)."""

    pool: asyncpg.Pool
    verifier: auth.JwksVerifier
    admin_api_key: str
    currency: str
    payments: service.Deps


_ctx = context_of(ApiContext)


@dataclass(frozen=True, slots=True)
class MerchantCaller:
    """Who reads a merchant's data: an admin (`merchant_id` None) or that merchant."""

    merchant_id: uuid.UUID | None

    def may_read(self, merchant_id: uuid.UUID) -> bool:
        return self.merchant_id is None or self.merchant_id == merchant_id


async def _connection(
    ctx: Annotated[ApiContext, Depends(_ctx)],
) -> AsyncIterator[asyncpg.Connection]:
    async with ctx.pool.acquire() as conn:
        yield conn


async def _member(
    ctx: Annotated[ApiContext, Depends(_ctx)],
    authorization: Annotated[Text | None, Header()] = None,
) -> auth.Member:
    return await ctx.verifier.member(authorization)


async def _admin(
    ctx: Annotated[ApiContext, Depends(_ctx)],
    x_admin_key: Annotated[Text | None, Header()] = None,
) -> None:
    auth.check_admin_key(x_admin_key, ctx.admin_api_key)


async def _merchant_or_admin(
    ctx: Annotated[ApiContext, Depends(_ctx)],
    x_admin_key: Annotated[Text | None, Header()] = None,
    x_api_key: Annotated[Text | None, Header()] = None,
) -> MerchantCaller:
    if x_admin_key is not None:
        auth.check_admin_key(x_admin_key, ctx.admin_api_key)
        return MerchantCaller(None)
    if x_api_key and len(x_api_key) <= MAX_API_KEY_LENGTH:
        async with ctx.pool.acquire() as conn:
            merchant_id = await merchants.by_api_key(conn, x_api_key)
        if merchant_id is not None:
            return MerchantCaller(merchant_id)
    raise errors.unauthorized("merchant endpoints need the merchant's X-API-Key (or X-Admin-Key)")


Context = Annotated[ApiContext, Depends(_ctx)]
Conn = Annotated[asyncpg.Connection, Depends(_connection)]
CurrentMember = Annotated[auth.Member, Depends(_member)]
Admin = Depends(_admin)
MerchantOrAdmin = Annotated[MerchantCaller, Depends(_merchant_or_admin)]
