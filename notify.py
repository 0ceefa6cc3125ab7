"""systemd's sd_notify protocol, without a dependency, and the watchdog's health check.

Under `Type=notify` systemd waits for READY=1 before it calls the unit started, and
with `WatchdogSec=` it kills the daemon when WATCHDOG=1 stops arriving. The protocol
is one AF_UNIX datagram of newline-separated KEY=VALUE lines to $NOTIFY_SOCKET
(a leading '@' means the Linux abstract namespace). Outside systemd the variable is
unset and every call is a cheap no-op, so the daemon runs the same from a terminal.

The watchdog only means something if the pings stop when the daemon stops doing its
job: Heartbeat lets the dispatch job report progress, and the main loop pings only
while dispatch is idle or has made progress recently. A dispatch run wedged on a dead
socket or a lock therefore ends in a restart instead of a daemon that looks alive.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger("herald.notify")


def notify(*lines: str) -> bool:
    """Send `lines` (e.g. "READY=1", "STATUS=...") to systemd in one datagram.

    Returns True when the datagram went out, False when not under systemd or when the
    socket is gone. Never raises: a notification must not take the daemon down.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or not lines:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall("\n".join(lines).encode("utf-8"))
    except OSError as exc:
        # systemd went away (or a test socket did): debug only, it repeats every ping
        log.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None
                      ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec), or None.

    None when the watchdog is off, the value is malformed, or $WATCHDOG_PID names
    another process (the variables leaked into a child that must not ping for us).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    # half the window, as sd_watchdog_enabled(3) advises: one late ping is not fatal
    return value / 2 / 1_000_000


class Heartbeat:
    """Progress reports from jobs, read by the main loop before each watchdog ping.

    Jobs call busy(True) when a run starts, beat() whenever it makes progress and
    busy(False) when it ends (runs may overlap: the busy count nests). The main loop
    asks healthy(now, limit): a run that has been busy for more than `limit` seconds
    without a beat is considered hung. Times are time.monotonic() values, passed in so
    tests need no clock.
    """

    def __init__(self, now: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self._last = now

    def beat(self, now: float | None = None) -> None:
        with self._lock:
            self._last = time.monotonic() if now is None else now

    def busy(self, flag: bool, now: float | None = None) -> None:
        with self._lock:
            if flag:
                if self._busy == 0:
                    # an idle spell is not a silence: the new run starts its own clock
                    self._last = time.monotonic() if now is None else now
                self._busy += 1
            else:
                self._busy = max(0, self._busy - 1)

    @property
    def is_busy(self) -> bool:
        with self._lock:
            return self._busy > 0

    def healthy(self, now: float, limit: float) -> bool:
        """False when a run is busy and its last beat is more than `limit` seconds old."""
        with self._lock:
            return self._busy == 0 or now - self._last <= limit

