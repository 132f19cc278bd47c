"""In-memory sliding-window rate limits (per process; enough for one replica)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from services.common.errors import Problem


class SlidingWindow:
    """At most `limit` hits per key within any `window_s` seconds."""

    def __init__(
        self, *, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit, self.window_s, self.clock, self.max_keys = limit, window_s, clock, max_keys
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float:
        """Count a hit; returns 0 if allowed, else the seconds until one is allowed again."""
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._evict(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window_s - now
        hits.append(now)
        return 0.0

    def _evict(self, now: float) -> None:
        """Drop keys with no hit inside the window, so memory stays bounded."""
        stale = [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]
        for key in stale:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:  # still full: forget the oldest half
            for key in list(self._hits)[: self.max_keys // 2]:
                del self._hits[key]


def rate_limited(retry_after_s: float, what: str) -> Problem:
    seconds = max(1, math.ceil(retry_after_s))
    return Problem(
        429, "rate-limited", "Too many requests",
        f"too many sign-in attempts for this {what}; retry after {seconds} s",
        headers={"Retry-After": str(seconds)},
    )
