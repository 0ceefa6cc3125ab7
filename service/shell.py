"""The main thread of `run` and `serve`: one loop for both.

Both processes are systemd services of Type=notify (systemd/herald.service,
systemd/herald-web.service) and keep the same promises:

- SIGTERM or SIGINT: the process stops taking work at once (`stopping` is set inside
  the handler, so dispatch claims nothing more), the loop ends, STOPPING=1 is said and
  the caller tears its parts down. A handler only sets flags: one that logged could
  deadlock on the logging lock, and no job ever runs inside a handler.
- SIGHUP: config.yaml and the templates, whole or not at all (reload.py), between
  RELOADING=1 and READY=1 so `systemctl reload` waits for it.
- WATCHDOG=1 every WatchdogSec/2 while the process is healthy (run: dispatch makes
  progress; serve: every listener still serves); a hung process stops pinging and
  systemd restarts it.
- The heartbeat row (db/heartbeat.py) every HEARTBEAT_EVERY seconds, for `status` and
  the console; a database away is said once, not at every beat.
- The templates file is watched between reloads: saving it is enough.
- STATUS= (what `systemctl status` shows), at READY and every 30 s, where the process
  has a line to show.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from db.errors import cause
from db.heartbeat import HEARTBEAT_EVERY
from notify import notify, watchdog_interval
from reload import templates_watch
from templates import TemplateHolder

log = logging.getLogger("herald")

TICK = 0.5  # how often the main thread looks at its flags and clocks
STATUS_EVERY = 30.0
WATCH_EVERY = 2.0  # the templates file's mtime


@dataclass
class Service:
    """What one process plugs into the shell."""

    stopping: threading.Event  # set at SIGTERM/SIGINT: take no more work
    templates: TemplateHolder  # watched between reloads
    reload: Callable[[], object]  # SIGHUP: config and templates, whole or not at all
    beat: Callable[[], object]  # write the heartbeat row (may raise: said once)
    healthy: Callable[[float], bool]  # (monotonic now) -> may the watchdog be pinged
    unhealthy: str = ""  # said once when the pings stop ("" says nothing)
    status: Callable[[], str] | None = None  # the STATUS= line, if the process has one
    # a dispatch process whose supervisor died stops as at SIGTERM (service/processes.py)
    orphaned: Callable[[], bool] | None = None


class Shell:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.signals: list[str] = []  # the names of the stop signals received
        self._beat_failing = False
        self._warned = False

    def install(self) -> None:
        """Take SIGTERM, SIGINT and SIGHUP (before anything that could receive work)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, lambda *_: self.reload.set())

    def _on_stop(self, signum: int, _frame: object) -> None:
        # no logging here: a handler that logs can deadlock on the logging lock
        self.signals.append(signal.Signals(signum).name)
        self.service.stopping.set()  # no new work from this instant
        self.stop.set()

    def _status(self) -> list[str]:
        status = self.service.status
        return [f"STATUS={status()}"] if status is not None else []

    def ready(self, status: str | None = None) -> None:
        """Tell systemd the process is up (after its parts have started)."""
        notify("READY=1", *([f"STATUS={status}"] if status else self._status()))

    def run(self) -> str:
        """Until SIGTERM/SIGINT; then STOPPING=1. Returns the signal's name."""
        ping_every = watchdog_interval()
        last_ping = last_status = last_beat = last_watch = float("-inf")
        try:
            while not self.stop.wait(TICK):
                if self.service.orphaned is not None and self.service.orphaned():
                    log.error("the supervising `herald run` is gone: stopping this "
                              "dispatch process")
                    self.signals.append("supervisor gone")
                    self.service.stopping.set()
                    break
                mono = time.monotonic()
                if ping_every and mono - last_ping >= ping_every and self._healthy(mono):
                    notify("WATCHDOG=1")
                    last_ping = mono
                if self.service.status is not None and mono - last_status >= STATUS_EVERY:
                    notify(*self._status())
                    last_status = mono
                if mono - last_beat >= HEARTBEAT_EVERY:
                    self.beat()
                    last_beat = mono
                if self.reload.is_set():
                    self.reload.clear()
                    notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
                    self.service.reload()
                    notify("READY=1", *self._status())
                elif mono - last_watch >= WATCH_EVERY:
                    last_watch = mono
                    templates_watch(self.service.templates)
        finally:
            notify("STOPPING=1")
        return self.signals[0] if self.signals else "stop"

    def _healthy(self, mono: float) -> bool:
        if self.service.healthy(mono):
            self._warned = False
            return True
        if not self._warned and self.service.unhealthy:
            log.error("%s", self.service.unhealthy)
        self._warned = True
        return False

    def beat(self) -> None:
        """The heartbeat row; a failure must not stop the process, and is said once,
        not every 15 s while the database is away."""
        try:
            self.service.beat()
            self._beat_failing = False
        except Exception as exc:  # noqa: BLE001 - a heartbeat must not stop the process
            (log.debug if self._beat_failing else log.warning)(
                "heartbeat not written: %s", cause(exc)[:160])
            self._beat_failing = True
