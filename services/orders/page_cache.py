"""Storefront listings, answered from memory for a second.

At midnight most shoppers ask for the same few pages (a category's first page, a popular
search). Each distinct page is computed once per `ttl_s` however many ask: concurrent
misses of one key wait for the one query in progress (single flight) instead of each
going to Postgres. A listing may therefore be up to `ttl_s` old, which is said to clients
with `Cache-Control: max-age`; product detail, carts and checkout never come from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class PageCache:
    ttl_s: float
    max_entries: int = 10_000
    clock: Clock = time.monotonic
    hits: int = 0
    misses: int = 0
    _entries: dict[Hashable, tuple[bytes, float]] = field(default_factory=dict)
    _computing: dict[Hashable, asyncio.Future[bytes]] = field(default_factory=dict)

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The page under `key`: remembered, being computed by another request, or computed
        now. A failure is not remembered: the next request tries again."""
        if self.ttl_s <= 0:
            return await compute()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > self.clock():
            self.hits += 1
            return hit[0]
        pending = self._computing.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._computing[key] = future
        try:
            body = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del self._computing[key]
        future.set_result(body)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # forgetting only costs a query
        self._entries[key] = (body, self.clock() + self.ttl_s)
        return body

    @property
    def max_age(self) -> int:
        """Whole seconds a client may reuse a page (Cache-Control)."""
        return max(int(self.ttl_s), 0)
