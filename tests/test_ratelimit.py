"""ratelimit.WindowLimiter: at most n starts in any window, counted from when each send
really starts, whatever order sends start in and however long they take to get there."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from ratelimit import NO_LIMIT, STOP_POLL, RateLimiters, Slot, WindowLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def worst(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


class FakeWait:
    """The limiter's wait on the fake clock: time passes by the wait (plus `late`, a
    thread waking late); a stop set before comes first."""

    def __init__(self, clock: Clock, late: float = 0.0) -> None:
        self.clock, self.late = clock, late
        self.waits: list[float] = []

    def __call__(self, stop: threading.Event | None, seconds: float) -> bool:
        if stop is not None and stop.is_set():
            return True
        self.waits.append(seconds)
        self.clock.t += seconds + self.late
        return False


def finishes(fn: Callable[[], object], seconds: float = 10.0) -> None:
    """Run fn on a daemon thread: a limiter that waits on the fake clock forever fails
    the test instead of hanging the run."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the limiter never handed the slot out"


def test_turns_are_spread_evenly_not_a_burst_at_the_start():
    clock = Clock()
    lim = WindowLimiter(4, clock=clock, wait=FakeWait(clock))
    times: list[float] = []

    def nine() -> None:
        for _ in range(9):
            slot = lim.acquire()
            slot.start()
            times.append(slot.at or 0.0)

    finishes(nine)
    assert times == [1000.0 + k * 0.25 for k in range(9)]
    assert worst(times, 1.0) == 4


def test_turns_keep_to_the_schedule_when_threads_wake_late():
    """Threads waking 20 ms late do not slow the drain: the next turn is counted from
    the schedule, not from when the late one went."""
    clock = Clock()
    lim = WindowLimiter(10, clock=clock, wait=FakeWait(clock, late=0.02))
    finishes(lambda: [lim.acquire().start() for _ in range(101)])
    assert clock.t == pytest.approx(1010.02)  # not 1000 + 100 * 0.12


def test_after_a_pause_the_next_send_goes_at_once_and_then_one_per_turn():
    clock = Clock()
    wait = FakeWait(clock)
    lim = WindowLimiter(2, clock=clock, wait=wait)
    lim.acquire().start()
    clock.t += 60  # idle
    lim.acquire().start()
    assert wait.waits == []
    finishes(lambda: lim.acquire().start())
    assert wait.waits == [0.5]  # no burst built up while idle


def test_the_window_holds_when_one_send_is_late_and_the_next_on_time():
    """Turns alone would let n + 1 starts into a window: the window rule holds them."""
    clock = Clock()
    lim = WindowLimiter(2, clock=clock, wait=FakeWait(clock))
    a = lim.acquire()
    clock.t = 1000.4  # a starts late: 0.4 s after its turn
    a.start()
    b = lim.acquire()  # turn at 1000.5
    b.start()
    got: list[float] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire().at or 0.0), daemon=True)
    t.start()  # its turn (1001.0) comes, but a and b started within the last second
    t.join(0.3)
    assert t.is_alive() and not got
    clock.t = 1001.4  # a's start leaves the window
    t.join(5)
    assert not t.is_alive()


def test_a_burst_of_n_then_one_per_expired_start():
    clock = Clock()
    lim = WindowLimiter(3, clock=clock, wait=lambda stop, s: False)  # turns not waited
    slots = [lim.acquire() for _ in range(3)]  # the window alone allows three
    for i, s in enumerate(slots):
        clock.t = 1000.0 + i * 0.25
        s.start()
    clock.t = 1001.0  # the first start is a full window old: one more may go at once
    fourth = lim.acquire()
    fourth.start()
    assert [s.at for s in [*slots, fourth]] == [1000.0, 1000.25, 1000.5, 1001.0]


def test_a_stop_ends_the_wait_for_a_turn_at_once():
    lim = WindowLimiter(0.2)  # one send every 5 s
    stop = threading.Event()
    lim.acquire(stop).start()
    ended: list[float] = []

    def second() -> None:
        slot = lim.acquire(stop)
        ended.append(time.monotonic())
        assert slot is NO_LIMIT  # counts for nothing: the caller does not send
        slot.start()

    t = threading.Thread(target=second, daemon=True)
    t.start()
    time.sleep(0.2)
    assert not ended
    asked = time.monotonic()
    stop.set()
    t.join(5)
    assert ended and ended[0] - asked < 0.2


def test_a_stop_ends_the_wait_for_the_window_too():
    """The second send's turn has come, but the first slot is still pending (its
    thread is writing started_at): a stop ends that wait too."""
    clock = Clock()
    lim = WindowLimiter(1, clock=clock, wait=FakeWait(clock))
    lim.acquire()  # pending, never started
    stop = threading.Event()
    got: list[Slot] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire(stop)), daemon=True)
    t.start()
    t.join(0.6)
    assert t.is_alive()
    stop.set()
    t.join(STOP_POLL + 0.5)
    assert got == [NO_LIMIT]


def test_a_cancelled_slot_gives_its_place_back():
    clock = Clock()
    lim = WindowLimiter(2, clock=clock, wait=lambda stop, s: False)  # turns not waited
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
    t = threading.Thread(target=lambda: got.append(lim.acquire().start() or time.monotonic()),
                         daemon=True)
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

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
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
