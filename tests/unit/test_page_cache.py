"""The storefront's listing cache: fresh for its TTL, one computation per page at a time."""

from __future__ import annotations

import asyncio

import pytest

from services.orders.page_cache import ListingFastPath, PageCache, listing_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_page_is_reused_within_its_ttl_and_computed_again_after() -> None:
    clock, calls = Clock(), []

    async def compute() -> bytes:
        calls.append(clock.now)
        return f"page {len(calls)}".encode()

    cache = PageCache(ttl_s=1.0, clock=clock)
    first = await cache.get("k", compute)
    clock.now += 0.9
    assert await cache.get("k", compute) == first
    assert await cache.get("other", compute) != first  # another key is its own page
    clock.now += 0.2
    assert await cache.get("k", compute) == b"page 3"
    assert len(calls) == 3 and (cache.hits, cache.misses) == (1, 3)


async def test_concurrent_misses_share_one_computation() -> None:
    release, calls = asyncio.Event(), 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"page"

    cache = PageCache(ttl_s=1.0)
    waiting = [asyncio.create_task(cache.get("k", compute)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [b"page"] * 50
    assert calls == 1


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    release, attempts = asyncio.Event(), 0

    async def failing() -> bytes:
        nonlocal attempts
        attempts += 1
        await release.wait()
        raise ConnectionError("database restarting")

    cache = PageCache(ttl_s=1.0)
    waiting = [asyncio.create_task(cache.get("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and attempts == 1

    async def fine() -> bytes:
        return b"page"

    assert await cache.get("k", fine) == b"page"


async def test_a_ttl_of_zero_computes_every_time() -> None:
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        return b"page"

    cache = PageCache(ttl_s=0)
    for _ in range(3):
        await cache.get("k", compute)
    assert calls == 3 and cache.max_age == 0


@pytest.mark.parametrize("ttl, age", [(1.0, 1), (2.5, 2), (0.5, 0)])
def test_clients_may_reuse_a_page_for_whole_seconds_of_the_ttl(ttl: float, age: int) -> None:
    assert PageCache(ttl_s=ttl).max_age == age


def test_a_page_is_one_key_however_its_parameters_are_ordered() -> None:
    assert (listing_key("/v1/products", b"limit=20&category=home")
            == listing_key("/v1/products", b"category=home&limit=20"))
    assert (listing_key("/v1/products", b"category=home")
            != listing_key("/v1/products", b"category=home&in_stock=true"))
    assert listing_key("/v1/products", b"") != listing_key("/v1/categories", b"")


async def test_the_fast_path_answers_only_fresh_pages_and_passes_the_rest_through() -> None:
    clock = Clock()
    cache = PageCache(ttl_s=1.0, clock=clock)
    passed: list[str] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        passed.append(scope["path"])

    fast = ListingFastPath(app, cache, paths=("/v1/products",))
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    def scope(path: str, query: bytes = b"", method: str = "GET") -> dict:
        return {"type": "http", "method": method, "path": path, "query_string": query}

    await fast(scope("/v1/products", b"limit=5"), None, send)  # not cached yet

    async def page() -> bytes:
        return b'{"items": []}'

    await cache.get(listing_key("/v1/products", b"limit=5"), page)
    await fast(scope("/v1/products", b"limit=5"), None, send)  # answered here
    await fast(scope("/v1/products", b"limit=5", method="POST"), None, send)
    await fast(scope("/v1/orders"), None, send)
    clock.now += 2
    await fast(scope("/v1/products", b"limit=5"), None, send)  # expired

    assert passed == ["/v1/products", "/v1/products", "/v1/orders", "/v1/products"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b'{"items": []}'
    assert (b"cache-control", b"public, max-age=1") in sent[0]["headers"]
    assert (b"x-content-type-options", b"nosniff") in sent[0]["headers"]


async def test_an_expired_page_is_served_while_one_request_recomputes_it() -> None:
    clock, release = Clock(), asyncio.Event()
    cache = PageCache(ttl_s=1.0, clock=clock)

    async def first() -> bytes:
        return b"old"

    async def slow() -> bytes:
        await release.wait()
        return b"new"

    await cache.get("k", first)
    clock.now += 1.5  # expired: nobody refreshes it yet, so the next request must
    assert cache.peek("k") is None
    refresher = asyncio.create_task(cache.get("k", slow))
    await asyncio.sleep(0)
    # The crowd meanwhile gets the page being replaced, at once, from both entry points.
    assert cache.peek("k") == b"old"
    assert await cache.get("k", slow) == b"old"
    clock.now += 0.6  # more than a TTL past expiry: too old to serve, wait for the query
    assert cache.peek("k") is None
    waiter = asyncio.create_task(cache.get("k", slow))
    await asyncio.sleep(0)
    assert not waiter.done()
    release.set()
    assert await refresher == b"new" and await waiter == b"new"
    assert cache.peek("k") == b"new"
