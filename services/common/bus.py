"""NATS JetStream: connection, streams and publishing with awaited acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from services.common import telemetry
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
        """Create the streams every service relies on, or bring them to the current
        config (idempotent), keeping whichever replica count is higher (_replicas_for)."""
        for stream, pattern in STREAMS.items():
            await self._ensure_stream(stream, pattern)

    async def _ensure_stream(self, stream: str, pattern: str, *, attempts: int = 8) -> None:
        """Create the stream, or bring an existing one to the current config.

        On a fresh cluster, replicas starting together race to create the same R3 stream:
        the losers' requests time out while the winner's stream is being placed (no error
        saying it exists), so a timeout means "look again", up to `attempts` times.
        """
        for attempt in range(1, attempts + 1):
            try:
                await self._create_or_update(stream, pattern)
                return
            except (TimeoutError, nats.errors.TimeoutError):
                if attempt == attempts:
                    raise
                log.info("stream not ready yet; looking again",
                         extra={"stream": stream, "attempt": attempt})
                await asyncio.sleep(min(0.25 * 2**attempt, 4.0))

    async def _create_or_update(self, stream: str, pattern: str) -> None:
        try:
            info = await self.js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(self._stream_config(stream, pattern, self.replicas))
                return
            except nats.js.errors.BadRequestError:  # another process created it meanwhile
                info = await self.js.stream_info(stream)
        wanted = self._stream_config(stream, pattern, self._replicas_for(info.config.num_replicas))
        if not _same_config(info.config, wanted):  # every replica's start would propose it
            await self.js.update_stream(wanted)

    def _replicas_for(self, current: int | None) -> int:
        """Never fewer than the stream has: a service started with the default of 1 must not
        quietly take an R3 stream down to one copy. Raising to the configured number is
        safe (JetStream copies the stream to the new peers) and is how an existing
        deployment reaches R3; lowering is an operator's decision (`nats stream edit`)."""
        return max(current or 1, self.replicas)

    @staticmethod
    def _stream_config(stream: str, pattern: str, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=stream,
            subjects=[pattern],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
            max_age=7 * 24 * 3600.0,
        )

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Publish and wait for JetStream's ack, in a PRODUCER span whose context the
        headers carry on (`telemetry.producer_span`); returns the stream sequence."""
        with telemetry.producer_span(subject, payload, headers) as sent:
            ack = await self.js.publish(subject, payload, headers=sent)
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


_COMPARED = ("subjects", "storage", "retention", "discard", "duplicate_window",
             "num_replicas", "max_age")


def _same_config(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether the stream already has every setting this service asks for."""
    return all(getattr(current, key) == getattr(wanted, key) for key in _COMPARED)
