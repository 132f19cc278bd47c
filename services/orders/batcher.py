"""Group commit: requests in flight together share one statement or call per batch.

A request joins the queue of its stage; a batch runs while at most `parallel` others run,
taking everything queued (up to `max_size`). Batches form by themselves under load: what
arrives while a batch runs waits for the next one. A batch may also wait `window_s` for
company, but only while other checkouts are in flight that could join it; a lone
checkout never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.orders.metrics import BATCH_SIZE

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Batcher(Generic[T, R]):
    """Runs `run` over batches of submitted items; each submitter gets its own result.

    `run` returns one result per item, in order (an Exception instance is raised to that
    item's submitter alone); if `run` itself raises, every item of the batch gets it.
    Items with the same `key` never share a batch (the later waits for the next one).
    `company` tells how many checkouts are in flight in the process, queued or not.
    """

    stage: str
    run: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]
    max_size: int = 32
    window_s: float = 0.0
    parallel: int = 1
    key: Callable[[T], Hashable] | None = None
    company: Callable[[], int] = lambda: 0
    _queue: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list)
    _running: int = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._running < self.parallel:
            self._running += 1
            asyncio.create_task(self._drain())  # noqa: RUF006 (ends with the queue)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                if (self.window_s and len(self._queue) < self.max_size
                        and self.company() > len(self._queue) + self._running - 1):
                    await asyncio.sleep(self.window_s)
                batch = self._take()
                if batch:
                    await self._run(batch)
        finally:
            self._running -= 1

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        rest: list[tuple[T, asyncio.Future[R]]] = []
        for entry in self._queue:
            key = self.key(entry[0]) if self.key else None
            if len(batch) >= self.max_size or (key is not None and key in keys):
                rest.append(entry)
                continue
            keys.add(key)
            batch.append(entry)
        self._queue = rest
        return batch

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        BATCH_SIZE.labels(self.stage).observe(len(batch))
        try:
            results = await self.run([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its submitter was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
