"""dispatch.rate_limit: a token bucket per app, shared by all send threads.

An operator caps how fast a backlog drains (so WeChat never answers 45011) without
caring how many workers run. A bucket holds at most one second's worth of tokens,
so a burst after an idle spell never exceeds the rate by more than that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it."""
        with self._lock:
            t = self._clock()
            self._tokens = min(self.capacity, self._tokens + (t - self._last) * self.rate)
            self._last = t
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate

    def acquire(self) -> float:
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimiters:
    """One bucket per app, made on first use; no-op when rate is None."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def acquire(self, app: str) -> float:
        if self.rate is None:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(app)
            if bucket is None:
                bucket = self._buckets[app] = TokenBucket(self.rate)
        return bucket.acquire()
