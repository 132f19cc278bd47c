"""Merchant accounts (admin). Merchant product endpoints join this module later."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from services.common import auth, errors
from services.orders.api.deps import Ctx
from services.orders.api.schemas import MerchantCreated, MerchantIn
from services.orders.store import catalog
from services.orders.views import json_response

router = APIRouter(prefix="/v1", tags=["merchants"])


def require_admin(ctx: Ctx, presented: str | None) -> None:
    expected = ctx.settings.admin_api_key
    if expected is None:  # no key configured: admin calls are off, not open
        raise errors.unauthorized("admin endpoints are disabled (ORDERS_ADMIN_API_KEY unset)")
    auth.check_admin_key(presented, expected.get_secret_value())


@router.post("/merchants", status_code=201, response_model=MerchantCreated,
             summary="Create a merchant and its API key (admin)")
async def create_merchant(
    ctx: Ctx, body: MerchantIn,
    x_admin_key: Annotated[str | None, Header(alias="X-Admin-Key")] = None,
) -> Response:
    """The API key is in this answer only; it is stored hashed."""
    require_admin(ctx, x_admin_key)
    api_key = auth.new_api_key("mk")
    async with ctx.pool.acquire() as conn:
        row = await catalog.insert_merchant(
            conn, merchant_id=uuid.uuid4(), name=body.name, api_key_hash=auth.hash_api_key(api_key))
    return json_response({"id": str(row["id"]), "name": row["name"], "api_key": api_key},
                          status_code=201)
