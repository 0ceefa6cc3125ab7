"""ratelimit.WindowLimiter: at most n starts in any window, counted from when each send
really starts, whatever order sends start in and however long they take to get there."""

from __future__ import annotations

import random
import threading
import time

import pytest

from ratelimit import NO_LIMIT, RateLimiters, WindowLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def worst(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_a_burst_of_n_then_one_per_expired_start():
    clock = Clock()
    lim = WindowLimiter(3, clock=clock)
    slots = [lim.acquire() for _ in range(3)]  # the first window's burst: no wait
    for i, s in enumerate(slots):
        clock.t = 1000.0 + i * 0.25
        s.start()
    clock.t = 1001.0  # the first start is a full window old: one more may go at once
    fourth = lim.acquire()
    fourth.start()
    assert [s.at for s in [*slots, fourth]] == [1000.0, 1000.25, 1000.5, 1001.0]


def test_a_cancelled_slot_gives_its_place_back():
    clock = Clock()
    lim = WindowLimiter(2, clock=clock)
    a, b = lim.acquire(), lim.acquire()
    a.start()
    b.cancel()  # never sent (lease lost): it does not count
    c = lim.acquire()  # at the same instant: a and c make two
    c.start()
    assert (a.at, b.at, c.at) == (1000.0, None, 1000.0)
    a.cancel()  # too late to give back: it was sent
    assert a.at == 1000.0


def test_a_pending_slot_counts_as_starting_now():
    """Handed out but not started (its thread writes started_at first): the next one
    waits for it rather than assume it went long ago."""
    lim = WindowLimiter(1)
    first = lim.acquire()
    got: list[float] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire().start() or time.monotonic()))
    t.start()
    started_late = time.monotonic() + 0.2
    while time.monotonic() < started_late:  # the first send is slow to start
        assert not got
        time.sleep(0.02)
    first.start()
    t.join(timeout=5)
    assert got and got[0] - first.at >= 1.0  # a full window after the first *started*


def test_threads_that_start_late_and_out_of_order_never_exceed_n():
    """The property itself, with real threads: 8 workers, each taking a random while
    between its slot and its start (and some never starting)."""
    n, sends = 10, 40
    lim = WindowLimiter(n)
    starts: list[float] = []
    lock = threading.Lock()
    rng = random.Random(42)
    delays = [rng.uniform(0, 0.05) for _ in range(sends)]
    cancel = set(rng.sample(range(sends), 4))
    todo = list(range(sends))

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            slot = lim.acquire()
            time.sleep(delays[i])
            if i in cancel:
                slot.cancel()
                continue
            slot.start()
            with lock:
                starts.append(slot.at)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(starts) == sends - len(cancel)
    assert worst(starts, 1.0) <= n
    assert max(starts) - min(starts) >= (len(starts) - n) // n  # it did hold them back


def test_fractional_rates_and_no_limit():
    assert (WindowLimiter(0.2).n, WindowLimiter(0.2).window) == (1, 5.0)
    assert (WindowLimiter(2.5).n, WindowLimiter(2.5).window) == (2, 1.0)
    assert RateLimiters(None).acquire("default") is NO_LIMIT
    NO_LIMIT.start()
    NO_LIMIT.cancel()  # harmless
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            WindowLimiter(bad)
