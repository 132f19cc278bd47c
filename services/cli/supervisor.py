"""Keeps `marketplace up`'s child processes running, as a Kubernetes Deployment would.

Each child is supervised on its own: when it dies, why (exit code or signal, the last lines
of its log) is logged, and it is started again after a back-off that doubles from
BACKOFF_MIN_S to BACKOFF_MAX_S and starts over once a run has lasted STABLE_AFTER_S. The
other children keep serving meanwhile. Nothing here assumes one process per service: a
service's replicas are children like any other, each with its own ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.cli.launcher import Child, Interrupted, ServiceFailed, stop_children, wait_ready

BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0
# A run this long was not a crash loop: the next death waits BACKOFF_MIN_S again.
STABLE_AFTER_S = 60.0
POLL_S = 0.5
log = logging.getLogger("marketplace.up")


@dataclass
class Backoff:
    """The wait before a restart: doubles with each quick death, capped; resets after a
    stable run."""

    delay: float = BACKOFF_MIN_S

    def after(self, ran_for: float) -> float:
        if ran_for >= STABLE_AFTER_S:
            self.delay = BACKOFF_MIN_S
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX_S)
        return delay


def exit_reason(returncode: int) -> str:
    """'exited with code 1', 'killed by SIGKILL' (Popen reports a signal as -N)."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


async def supervise(
    children: Sequence[Child], stop: asyncio.Event,
    *, on_restart: Callable[[Child], None] = lambda child: None,
) -> None:  # fmt: skip
    """Until `stop` is set, restart each child that dies; `on_restart` follows its new pid."""
    await asyncio.gather(*(keep_running(child, stop, on_restart) for child in children))


async def keep_running(
    child: Child, stop: asyncio.Event, on_restart: Callable[[Child], None]
) -> None:
    backoff = Backoff()
    while await _exits(child, stop):
        ran_for = time.monotonic() - child.started_at
        delay = backoff.after(ran_for)
        reason = exit_reason(child.proc.returncode)
        log.warning("%s", child.failure(
            f"(pid {child.proc.pid}) {reason} after {ran_for:.0f}s; "
            f"starting it again in {delay:.0f}s"))
        if await _stopped_within(stop, delay):
            return
        child.respawn()
        on_restart(child)
        try:
            await wait_ready(child, child.http_port, stop)
        except Interrupted:
            return
        except ServiceFailed as exc:  # died at start-up (next turn says why), or hung
            if child.proc.poll() is None:
                log.warning("%s; stopping it", exc)
                await asyncio.to_thread(stop_children, [child])
            continue
        log.warning("%s is serving again (pid %s)", child.label, child.proc.pid)


async def _exits(child: Child, stop: asyncio.Event) -> bool:
    """Whether the child exited (True) or `stop` came first (False)."""
    while not stop.is_set():
        if child.proc.poll() is not None:
            return True
        await _stopped_within(stop, POLL_S)
    return False


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
