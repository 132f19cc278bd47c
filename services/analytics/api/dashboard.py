"""The live dashboard: a static page, and its data as Server-Sent Events once a second.

The page itself holds no data, so it is served without a key. It asks the operator for
the admin key once, keeps it in sessionStorage (gone when the tab closes) and opens the
stream with `?key=`: a browser's EventSource cannot send headers, and a cookie would need
a login flow of its own. The key in the query string never reaches a log (access logs are
off) or another site (Referrer-Policy: no-referrer, and the page loads nothing from
elsewhere: Content-Security-Policy 'self').
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from services.analytics.api.deps import Ctx
from services.analytics.live import Broadcaster
from services.common import auth, errors
from services.common.inputs import Text

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
INTERVAL_S = 1.0

router = APIRouter(tags=["dashboard"])


class EventStream(StreamingResponse):
    """Server-Sent Events, documented as such."""

    media_type = "text/event-stream"


def _asset(name: str) -> FileResponse:
    return FileResponse(
        ASSETS / name, media_type=f"{FILES[name]}; charset=utf-8",
        headers={"Content-Security-Policy": CSP},
    )


@router.get("/dashboard", include_in_schema=False)
async def page() -> FileResponse:
    return _asset("index.html")


@router.get("/dashboard/{name}", include_in_schema=False)
async def asset(name: Text) -> FileResponse:
    if name not in FILES:
        raise errors.not_found(f"dashboard file {name}")
    return _asset(name)


async def _frames(request: Request, broadcaster: Broadcaster) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        snapshot = await broadcaster.latest()
        yield f"event: snapshot\ndata: {json.dumps(snapshot, separators=(',', ':'))}\n\n"
        await asyncio.sleep(INTERVAL_S)


@router.get("/v1/analytics/stream", summary="The dashboard's figures as Server-Sent Events",
            operation_id="streamDashboard", response_class=EventStream,
            response_description="`event: snapshot` frames, once a second")
async def stream(
    request: Request, ctx: Ctx,
    key: Annotated[Text | None, Query(description="the admin key (EventSource sends no headers)")]
    = None,
    x_admin_key: Annotated[Text | None, Header(alias="X-Admin-Key")] = None,
) -> EventStream:
    """`text/event-stream` of the dashboard's figures (event `snapshot`), once a second."""
    auth.check_admin_key(x_admin_key or key, ctx.settings.admin_api_key.get_secret_value())
    return EventStream(_frames(request, ctx.broadcaster), headers={"X-Accel-Buffering": "no"})
