"""Test-only fault injection: die (or pause) at a named saga step of a checkout request.

Off unless ORDERS_FAULT_CRASH_AT / ORDERS_FAULT_HOLD_AT is set (refused in production).
Armed only inside a checkout request, so the recovery loop that finishes the job after a
restart runs through the same step unharmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
from collections.abc import Iterator

from services.orders.settings import OrdersSettings

log = logging.getLogger(__name__)
_armed: contextvars.ContextVar[bool] = contextvars.ContextVar("orders_fault_armed", default=False)


@contextlib.contextmanager
def armed() -> Iterator[None]:
    token = _armed.set(True)
    try:
        yield
    finally:
        _armed.reset(token)


async def point(settings: OrdersSettings, step: str) -> None:
    if not _armed.get():
        return
    if settings.fault_hold_at == step:
        log.warning("fault injection: holding", extra={"step": step})
        await asyncio.sleep(settings.fault_hold_s)
    if settings.fault_crash_at == step:
        log.warning("fault injection: SIGKILL", extra={"step": step})
        os.kill(os.getpid(), signal.SIGKILL)
