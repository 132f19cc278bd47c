"""Request dependencies: the pool, the admin key check, the report window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Query, Request

from services.analytics.domain.window import WindowError, report_window
from services.analytics.settings import AnalyticsSettings
from services.common import auth, errors


def _settings(request: Request) -> AnalyticsSettings:
    settings: AnalyticsSettings = request.app.state.settings
    return settings


async def _connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        yield conn


def _require_admin(
    settings: Annotated[AnalyticsSettings, Depends(_settings)],
    x_admin_key: Annotated[str | None, Header(alias="X-Admin-Key")] = None,
) -> None:
    auth.check_admin_key(x_admin_key, settings.admin_api_key.get_secret_value())


def _window(
    start: Annotated[
        datetime | None, Query(alias="from", description="RFC 3339; default: an hour before to")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="RFC 3339; default: now")] = None,
) -> tuple[datetime, datetime]:
    try:
        return report_window(start, end, now=datetime.now(UTC))
    except WindowError as exc:
        raise errors.validation_error(exc.field, exc.message) from exc


Connection = Annotated[asyncpg.Connection, Depends(_connection)]
Admin = Depends(_require_admin)
Window = Annotated[tuple[datetime, datetime], Depends(_window)]
