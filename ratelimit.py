"""dispatch.rate_limit: at most N sends per app in any one-second window.

An operator caps how fast a backlog drains (so WeChat never answers 45011) without
caring how many workers run. A token bucket would not do: it starts full and refills
while it drains, so `rate_limit: 20` let 40 sends through in the first second. This is
a sliding log instead: a send may start only a full window after the send N places
before it, which is exactly "never more than N in any window". The log holds N start
times; reservations are taken under a lock, so all send threads share it.

A fractional rate below 1 (0.2 = one send every 5 s) is one send per 1/rate seconds;
above 1 the fraction is dropped (2.5 allows 2 a second), since "at most 2.5 in any
second" can only mean 2.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class WindowLimiter:
    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number > 0")
        self.rate = rate
        if rate >= 1:
            self.n, self.window = int(rate), 1.0
        else:
            self.n, self.window = 1, 1.0 / rate
        self._starts: deque[float] = deque(maxlen=self.n)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take the next start time; return how long the caller must wait for it."""
        with self._lock:
            t = self._clock()
            start = t
            if len(self._starts) == self.n:
                start = max(t, self._starts[0] + self.window)
            self._starts.append(start)
            return start - t

    def acquire(self) -> float:
        wait = self._reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimiters:
    """One limiter per app, made on first use; no-op when rate is None."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._limiters: dict[str, WindowLimiter] = {}
        self._lock = threading.Lock()

    def acquire(self, app: str) -> float:
        if self.rate is None:
            return 0.0
        with self._lock:
            limiter = self._limiters.get(app)
            if limiter is None:
                limiter = self._limiters[app] = WindowLimiter(self.rate)
        return limiter.acquire()


__all__ = ["RateLimiters", "WindowLimiter"]
