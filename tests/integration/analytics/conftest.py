"""Analytics running in-process on real ports, with real Postgres and JetStream behind it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message

from services.analytics import bootstrap
from services.analytics.settings import AnalyticsSettings
from services.common.bus import Bus
from services.common.events import envelope_headers
from tests.helpers import eventually, reset_streams
from tests.infra import FreshDb, free_port
from tests.integration.inprocess import run_in_process

ADMIN_KEY = "test-admin-key-for-analytics"



@dataclass(frozen=True)
class Published:
    """An event as it went out, so a test can deliver it again."""

    subject: str
    event_id: uuid.UUID
    payload: bytes


@dataclass
class Analytics:
    http: httpx.AsyncClient
    bus: Bus
    db: FreshDb

    async def publish(
        self, subject: str, message: Message, *, event_id: uuid.UUID | None = None
    ) -> Published:
        event = Published(subject, event_id or uuid.uuid4(), message.SerializeToString())
        await self.redeliver(event)
        return event

    async def redeliver(self, event: Published) -> None:
        """Publish with the same ce-id but a new Nats-Msg-Id, so JetStream keeps the copy."""
        source = event.subject.split(".", 1)[0]
        headers = envelope_headers(event.subject, event.event_id, source)
        headers["Nats-Msg-Id"] = str(uuid.uuid4())
        await self.bus.publish(event.subject, event.payload, headers)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params, headers={"X-Admin-Key": ADMIN_KEY})

    async def report(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.get(path, **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settled(self, consumer: str, handled: int) -> None:
        """Wait until `consumer` has applied or skipped `handled` events and has no lag."""

        async def probe() -> dict[str, Any]:
            ready = (await self.http.get("/readyz")).json()
            item: dict[str, Any] = ready["consumers"]["items"][consumer]
            return item

        await eventually(
            probe,
            until=lambda c: c["applied"] + c["duplicates"] >= handled and c["lag"] == 0,
            what=f"{consumer} handled {handled} events",
        )


@pytest.fixture
async def analytics(
    fresh_db: Callable[..., Awaitable[FreshDb]], nats_url: str
) -> AsyncIterator[Analytics]:
    await reset_streams(nats_url)
    db = await fresh_db("analytics")
    settings = AnalyticsSettings(
        database_url=db.dsn("analytics"),
        nats_url=nats_url,
        http_port=free_port(),
        admin_api_key=ADMIN_KEY,
        environment="test",
        db_pool_min=1,
        db_pool_max=5,
    )
    async with (
        run_in_process(bootstrap.start, settings),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10.0) as http,
    ):
        bus = await Bus.connect(nats_url, name="analytics-test-producer")
        try:
            yield Analytics(http=http, bus=bus, db=db)
        finally:
            await bus.close()
