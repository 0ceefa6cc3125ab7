"""dispatch.rate_limit: sends per app spread evenly, at most N in any one-second window.

An operator caps how fast a backlog drains (so WeChat never answers 45011) without
caring how many workers run. Two rules, both needed:

1. Pacing. Each send takes a turn 1/N s after the previous one (a queue of turns, in
   the order sends ask), and waits for it. A sliding log alone let the N sends of each
   second go out together at its start: N within ~30 ms, and since the requests reach
   WeChat a little spread out, WeChat counted up to 1.5 N in one second. Turns keep to
   the schedule rather than to when the previous send really went, so threads waking
   late (the GIL) do not slow the drain below N a second.
2. The window. A turn does not by itself bound a window: one send late to its turn and
   the next on time are closer than 1/N. So a send also waits until fewer than N sends
   started within the last window; that is what holds "never more than N in any
   window". A token bucket would not do: it starts full and refills while it drains
   (`rate_limit: 20` let 40 through in the first second).

What counts in the window is when a send really starts, not when its slot was handed
out: between the two a send thread wakes (late, when 16 threads want the GIL) and,
under on_stale: fail, writes started_at to the database. Counting from the hand-out
let 37 sends into one second at a limit of 25. So a send takes a slot (acquire), does
what it must before the request, and says when the request begins (Slot.start); a
slot whose send never happens is given back (Slot.cancel). A slot handed out but not
yet started counts as starting now.

A stop ends every wait at once: acquire(stop=event) returns as soon as the event is
set (the slot it then returns is outside the log); the caller looks at the event
again before it sends, and sends nothing.

A fractional rate below 1 (0.2 = one send every 5 s) is one send per 1/rate seconds;
above 1 the fraction is dropped (2.5 allows 2 a second), since "at most 2.5 in any
second" can only mean 2.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

# Longest single wait for the window (rule 2) before a stop is looked at again. Such
# waits are short and rare (a send late to its turn); the long wait, for the turn, is on
# the stop event itself.
STOP_POLL = 0.25

# wait(stop, seconds) -> True if the stop came first
Wait = Callable[["threading.Event | None", float], bool]


def _wait(stop: threading.Event | None, seconds: float) -> bool:
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


class Slot:
    """One send's place in the log. `at`: when the send started (None: not yet)."""

    __slots__ = ("_limiter", "at", "done")

    def __init__(self, limiter: WindowLimiter | None) -> None:
        self._limiter = limiter
        self.at: float | None = None
        self.done = False

    def start(self) -> None:
        """The request goes out now."""
        if self._limiter is not None and not self.done:
            self._limiter._start(self)

    def cancel(self) -> None:
        """The send will not happen: the slot goes back."""
        if self._limiter is not None and not self.done:
            self._limiter._cancel(self)


NO_LIMIT = Slot(None)


class WindowLimiter:
    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 wait: Wait = _wait) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a finite number > 0")
        self.rate = rate
        if rate >= 1:
            self.n, self.window = int(rate), 1.0
        else:
            self.n, self.window = 1, 1.0 / rate
        self.interval = self.window / self.n  # between two turns
        self._next_turn = -math.inf
        # slots handed out that have not started, and those that started within the
        # last window: a new slot is handed out only while there are fewer than n
        self._active: list[Slot] = []
        self._blind = 0  # threads waiting with every active slot still pending
        self._clock = clock
        self._wait = wait
        self._cond = threading.Condition()

    def acquire(self, stop: threading.Event | None = None) -> Slot:
        """Wait for this send's turn, then until the window allows it; the caller must
        start() or cancel() the slot. Returns at once when `stop` is set (a slot that
        counts for nothing: the caller checks `stop` and does not send).

        Granted while fewer than n slots are pending or started within the window. A
        pending slot counts as starting now, so whatever order the sends then start in,
        no window holds more than n starts (the last of them to be handed out saw all
        the others pending or started within its window)."""
        with self._cond:
            now = self._clock()
            turn = max(self._next_turn, now)
            self._next_turn = turn + self.interval
        if turn > now and self._wait(stop, turn - now):
            return NO_LIMIT  # stopping
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    return NO_LIMIT
                now = self._clock()
                self._active = [s for s in self._active
                                if s.at is None or s.at > now - self.window]
                if len(self._active) < self.n:
                    slot = Slot(self)
                    self._active.append(slot)
                    return slot
                started = [s.at for s in self._active if s.at is not None]
                if started:
                    self._cond.wait(min(min(started) + self.window - now, STOP_POLL))
                else:  # all pending: wait for one to start or be cancelled
                    self._blind += 1
                    try:
                        self._cond.wait(STOP_POLL)
                    finally:
                        self._blind -= 1

    def _start(self, slot: Slot) -> None:
        with self._cond:
            slot.at = self._clock()
            slot.done = True
            # A start frees no slot (only time and cancels do), so only a thread that
            # saw nothing started needs to hear of it. Waking the others would hand the
            # GIL away between this timestamp and the request it stands for.
            if self._blind:
                self._cond.notify_all()

    def _cancel(self, slot: Slot) -> None:
        with self._cond:
            slot.done = True
            if slot in self._active:
                self._active.remove(slot)
            self._cond.notify_all()


class RateLimiters:
    """One limiter per app, made on first use; no-op when rate is None."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._limiters: dict[str, WindowLimiter] = {}
        self._lock = threading.Lock()

    def acquire(self, app: str, stop: threading.Event | None = None) -> Slot:
        if self.rate is None:
            return NO_LIMIT
        with self._lock:
            limiter = self._limiters.get(app)
            if limiter is None:
                limiter = self._limiters[app] = WindowLimiter(self.rate)
        return limiter.acquire(stop)


__all__ = ["NO_LIMIT", "STOP_POLL", "RateLimiters", "Slot", "WindowLimiter"]
