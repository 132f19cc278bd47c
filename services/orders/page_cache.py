"""Storefront listings, answered from memory for a second.

At midnight most shoppers ask for the same few pages (a category's first page, a popular
search). Each distinct page is computed once per `ttl_s` however many ask: concurrent
misses of one key wait for the one query in progress (single flight) instead of each
going to Postgres. While one request recomputes an expired page, the others are answered
with the page it replaces (stale-while-revalidate, as CDNs do), for at most `ttl_s` more:
the page's expiry never stalls the crowd behind one query. A listing may therefore be up
to twice `ttl_s` (plus one query) old; clients are told `Cache-Control: max-age=<ttl_s>`.
Product detail, carts and checkout never come from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from services.common import metrics
from services.common.web import SECURITY_HEADERS

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
        body = self.peek(key)
        if body is not None:
            return body
        pending = self._computing.get(key)
        if pending is not None:  # no page to serve meanwhile: wait for the one query
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

    def peek(self, key: Hashable) -> bytes | None:
        """The page if it is fresh, or expired less than `ttl_s` ago while another request
        recomputes it; never computes. None: the caller is to compute it."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        body, fresh_until = hit
        now = self.clock()
        if now >= fresh_until and (key not in self._computing
                                   or now >= fresh_until + self.ttl_s):
            return None
        self.hits += 1
        return body

    @property
    def max_age(self) -> int:
        """Whole seconds a client may reuse a page (Cache-Control)."""
        return max(int(self.ttl_s), 0)


def listing_key(path: str, query_string: bytes) -> Hashable:
    """One page, however its query parameters are ordered."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return (path, tuple(sorted(pairs)))


class ListingFastPath:
    """ASGI, outermost: a listing already in the cache is answered before anything else
    (tracing, routing, parameter parsing), which all cost more than the rest of such a
    request. It adds what the service middleware would (security headers, request metrics);
    a cache hit does no I/O, so it is not traced. A miss (or anything else) goes through the
    app, whose endpoint validates the query and fills the cache; so only pages of valid
    queries are ever answered here."""

    def __init__(self, app: ASGIApp, cache: PageCache, paths: tuple[str, ...]) -> None:
        self.app, self.cache = app, cache
        # Metric children bound once: labelling costs more than counting.
        self.counted = {p: (metrics.HTTP_REQUESTS.labels("GET", p, "200"),
                            metrics.HTTP_LATENCY.labels("GET", p)) for p in paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counted = self.counted.get(scope.get("path", "")) if scope["type"] == "http" else None
        if counted is not None and scope["method"] == "GET":
            start = time.perf_counter()
            body = self.cache.peek(listing_key(scope["path"], scope["query_string"]))
            if body is not None:
                await send(_start(len(body), self.cache.max_age))
                await send({"type": "http.response.body", "body": body})
                requests, latency = counted
                requests.inc()
                latency.observe(time.perf_counter() - start)
                return
        await self.app(scope, receive, send)


def _start(length: int, max_age: int) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(length).encode()),
        (b"cache-control", f"public, max-age={max_age}".encode()), *SECURITY_HEADERS]}
