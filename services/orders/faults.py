"""Test-only fault injection: die (or pause) at a named saga step of a checkout request.

Off unless ORDERS_FAULT_CRASH_AT / ORDERS_FAULT_HOLD_AT is set (refused in production).
Armed only inside a checkout request, so the recovery loop that finishes the job after a
restart runs through the same step unharmed. With ORDERS_FAULT_BATCH_OF=N the fault waits
until N checkout requests are at the step together (a batch of N placed or paid), then
fires for all of them: the crash then interrupts the whole batch, not its first order.
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


# Per service started (its settings) and step: how many armed requests reached it, and
# the moment the N-th did (a service started again in the same process counts afresh).
_arrived: dict[tuple[int, str], int] = {}
_formed: dict[tuple[int, str], asyncio.Event] = {}


async def _gathered(settings: OrdersSettings, step: str) -> None:
    """Return once `fault_batch_of` requests have reached `step` (at once for the N-th and
    any later one)."""
    at = (id(settings), step)
    formed = _formed.setdefault(at, asyncio.Event())
    _arrived[at] = _arrived.get(at, 0) + 1
    if _arrived[at] >= settings.fault_batch_of:
        formed.set()
    await formed.wait()


async def point(settings: OrdersSettings, step: str) -> None:
    if not _armed.get() or step not in (settings.fault_hold_at, settings.fault_crash_at):
        return
    await _gathered(settings, step)
    if settings.fault_hold_at == step:
        log.warning("fault injection: holding", extra={"step": step})
        await asyncio.sleep(settings.fault_hold_s)
    if settings.fault_crash_at == step:
        log.warning("fault injection: SIGKILL", extra={"step": step})
        os.kill(os.getpid(), signal.SIGKILL)
