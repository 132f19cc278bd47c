"""NATS JetStream: connection, streams and publishing with awaited acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from services.common.events import STREAMS

log = logging.getLogger(__name__)

# A republished event within this window is dropped by JetStream (Nats-Msg-Id).
DUPLICATE_WINDOW_S = 600.0


class Bus:
    """One NATS connection per process; JetStream publish and pull consumers share it."""

    def __init__(self, nc: Client, *, replicas: int = 1) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.replicas = replicas

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        replicas: int = 1,
        on_state: Callable[[str], Awaitable[None]] | None = None,
    ) -> Bus:
        async def disconnected() -> None:
            log.warning("nats disconnected", extra={"client": name})

        async def reconnected() -> None:
            log.info("nats reconnected", extra={"client": name})

        async def error(exc: Exception) -> None:
            log.warning("nats error", extra={"client": name, "error": str(exc)})

        nc = await nats.connect(
            servers=url.split(","),
            name=name,
            max_reconnect_attempts=-1,  # never give up: the outbox holds what could not go out
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
        return cls(nc, replicas=replicas)

    async def ensure_streams(self) -> None:
        """Create or update the streams every service relies on (idempotent)."""
        for stream, pattern in STREAMS.items():
            config = StreamConfig(
                name=stream,
                subjects=[pattern],
                storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.OLD,
                duplicate_window=DUPLICATE_WINDOW_S,
                num_replicas=self.replicas,
                max_age=7 * 24 * 3600.0,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Publish and wait for JetStream's ack; returns the stream sequence."""
        ack = await self.js.publish(subject, payload, headers=headers)
        return int(ack.seq)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Close without draining: every publish was already awaited for its ack, and a
        drain can wait on pull subscriptions whose fetches were cancelled."""
        if not self.nc.is_closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.nc.close(), timeout=5)
