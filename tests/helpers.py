"""Small helpers shared by integration and e2e tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors

T = TypeVar("T")


PERMISSIONS_VIOLATION = "permissions violation"


async def publish_once(
    nc: nats.NATS, subject: str, *, timeout_s: float, errors: list[str] | None = None
) -> tuple[str, bool]:
    """Publish one JetStream message on `nc`, then close it: its Nats-Msg-Id, and whether
    it was acknowledged (a publish the server denies is never acknowledged).

    `errors`, filled by `nc`'s error callback: once the server has refused the publish
    (a permissions violation) the message is gone, so the wait for its ack ends there
    rather than at `timeout_s`."""
    msg_id = str(uuid.uuid4())
    publish = asyncio.ensure_future(nc.jetstream(timeout=timeout_s).publish(
        subject, b"x", headers={"Nats-Msg-Id": msg_id}))
    try:
        while not publish.done():
            if errors is not None and any(PERMISSIONS_VIOLATION in e.lower() for e in errors):
                publish.cancel()
                return msg_id, False
            await asyncio.wait({publish}, timeout=0.05)
        await publish
        acked = True
    except (nats.errors.TimeoutError, nats.js.errors.Error, TimeoutError):
        acked = False
    finally:
        await nc.close()
    return msg_id, acked


async def reset_streams(nats_url: str) -> None:
    """Delete every JetStream stream (and so its consumers): each test starts from none."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout_s: float = 15.0,
    what: str = "condition",
) -> T:
    """Poll `probe` until `until(result)`; fail with the last value seen (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await probe()
        if until(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(0.1)
