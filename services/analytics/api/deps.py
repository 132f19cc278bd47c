"""Request dependencies: the pool, admin and merchant keys, the report window."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Query

from services.analytics import store
from services.analytics.domain.window import WindowError, check_granularity, report_window
from services.analytics.live import Broadcaster
from services.analytics.operator_queries import Granularity
from services.analytics.settings import AnalyticsSettings
from services.common import auth, errors
from services.common.inputs import Text
from services.common.web import context_of


@dataclass(frozen=True)
class Context:
    """What the routes need, handed in by the composition root."""

    settings: AnalyticsSettings
    pool: asyncpg.Pool
    broadcaster: Broadcaster


Ctx = Annotated[Context, Depends(context_of(Context))]


async def _connection(ctx: Ctx) -> AsyncIterator[asyncpg.Connection]:
    async with ctx.pool.acquire() as conn:
        yield conn


async def _require_admin(
    ctx: Ctx, x_admin_key: Annotated[Text | None, Header(alias="X-Admin-Key")] = None
) -> None:
    auth.check_admin_key(x_admin_key, ctx.settings.admin_api_key.get_secret_value())


async def _window(
    start: Annotated[
        datetime | None, Query(alias="from", description="RFC 3339; default: an hour before to")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="RFC 3339; default: now")] = None,
) -> tuple[datetime, datetime]:
    try:
        return report_window(start, end, now=datetime.now(UTC))
    except WindowError as exc:
        raise errors.validation_error(exc.field, exc.message) from exc


async def _series_window(
    window: Annotated[tuple[datetime, datetime], Depends(_window)],
    granularity: Annotated[Granularity, Query(description="bucket size of the series")] = "minute",
) -> tuple[datetime, datetime, Granularity]:
    try:
        check_granularity(*window, granularity)
    except WindowError as exc:
        raise errors.validation_error(exc.field, exc.message) from exc
    return (*window, granularity)


async def _merchant(
    conn: Annotated[asyncpg.Connection, Depends(_connection)],
    x_api_key: Annotated[Text | None, Header(alias="X-API-Key")] = None,
) -> uuid.UUID:
    """The merchant whose current API key this is (keys arrive as orders.merchant.* events)."""
    if not x_api_key:
        raise errors.unauthorized("insights need the merchant's X-API-Key header")
    merchant_id = await store.merchant_by_key_hash(conn, auth.hash_api_key(x_api_key))
    if merchant_id is None:
        raise errors.unauthorized("unknown or rotated merchant API key")
    return merchant_id


Connection = Annotated[asyncpg.Connection, Depends(_connection)]
Admin = Depends(_require_admin)
Window = Annotated[tuple[datetime, datetime], Depends(_window)]
SeriesWindow = Annotated[tuple[datetime, datetime, Granularity], Depends(_series_window)]
Merchant = Annotated[uuid.UUID, Depends(_merchant)]
