"""Merchant accounts: created by an admin; a merchant rotates its own API key."""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Header
from fastapi.responses import Response

from services.common import auth, errors, outbox
from services.common.inputs import Text
from services.orders import messages
from services.orders.api.deps import Ctx
from services.orders.api.schemas import ApiKey, MerchantCreated, MerchantIn
from services.orders.store import catalog, products
from services.orders.views import json_response

router = APIRouter(prefix="/v1", tags=["merchants"])
SOURCE = "orders"


def require_admin(ctx: Ctx, presented: str | None) -> None:
    expected = ctx.settings.admin_api_key
    if expected is None:  # no key configured: admin calls are off, not open
        raise errors.unauthorized("admin endpoints are disabled (ORDERS_ADMIN_API_KEY unset)")
    auth.check_admin_key(presented, expected.get_secret_value())


class MerchantKey:
    """The merchant behind `X-API-Key`, and the hash it was found by."""

    def __init__(self, merchant_id: uuid.UUID, key_hash: str) -> None:
        self.id, self.key_hash = merchant_id, key_hash


async def current_merchant(
    ctx: Ctx, x_api_key: Annotated[Text | None, Header(alias="X-API-Key")] = None
) -> MerchantKey:
    if not x_api_key or len(x_api_key) > 200:
        raise errors.unauthorized("merchant endpoints need a valid X-API-Key header")
    key_hash = auth.hash_api_key(x_api_key)
    async with ctx.pool.acquire() as conn:
        merchant_id = await products.merchant_by_key_hash(conn, key_hash)
    if merchant_id is None:
        raise errors.unauthorized("merchant endpoints need a valid X-API-Key header")
    return MerchantKey(merchant_id, key_hash)


CurrentMerchant = Annotated[MerchantKey, Depends(current_merchant)]


async def _announce(conn: asyncpg.Connection, subject: str, row: asyncpg.Record,
                    key_hash: str) -> None:
    await outbox.add_event(conn, source=SOURCE, subject=subject, aggregate_id=str(row["id"]),
                           message=messages.merchant_changed(row["id"], row["name"], key_hash))


@router.post("/merchants", status_code=201, response_model=MerchantCreated,
             summary="Create a merchant and its API key (admin)", operation_id="createMerchant")
async def create_merchant(
    ctx: Ctx, body: MerchantIn,
    x_admin_key: Annotated[Text | None, Header(alias="X-Admin-Key")] = None,
) -> Response:
    """The API key is in this answer only; it is stored hashed."""
    require_admin(ctx, x_admin_key)
    api_key = auth.new_api_key("mk")
    key_hash = auth.hash_api_key(api_key)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await catalog.insert_merchant(
            conn, merchant_id=uuid.uuid4(), name=body.name, api_key_hash=key_hash)
        await _announce(conn, "orders.merchant.created", row, key_hash)
    return json_response({"id": str(row["id"]), "name": row["name"], "api_key": api_key},
                         status_code=201)


@router.post("/merchant/api-key/rotate", response_model=ApiKey,
             summary="Replace the merchant's API key (merchant)",
             operation_id="rotateMerchantApiKey")
async def rotate_api_key(ctx: Ctx, merchant: CurrentMerchant) -> Response:
    """The new key is in this answer only; the old one stops working at once."""
    api_key = auth.new_api_key("mk")
    key_hash = auth.hash_api_key(api_key)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await products.rotate_key(conn, merchant.id, old_hash=merchant.key_hash,
                                        new_hash=key_hash)
        if row is None:
            raise errors.unauthorized("this API key was rotated meanwhile")
        await _announce(conn, "orders.merchant.key_rotated", row, key_hash)
    return json_response({"id": str(merchant.id), "api_key": api_key})
