"""dispatch.processes: N: one `herald run` as N dispatch processes on one queue.

One Python process sends on one core at most (the GIL). With `dispatch.processes: N`
above 1, `herald run` becomes a small supervisor that starts N children, each a plain
`herald run` of its own (fork and exec: a fresh interpreter that opens its own
database connections; nothing open is inherited), told by HERALD_DISPATCH_SHARE=k/n
that it is the k-th of n:

- each child claims only the rows whose recipient (openid, or phone when it has none)
  hashes to its share (db/dialects.py), so two children never hold rows of one openid
  at once; inside a child, sends to one recipient already go one after another. That
  keeps WeChat's rule (43108: no concurrent sends to one user) across the processes.
  Claims on SQLite are BEGIN IMMEDIATE transactions with a busy timeout, like those of
  the application's own writers;
- child 0 also runs every other job (token refresh, stale_retry, purge, events) and
  the metrics endpoint (whose send counters are then its own; the queue gauges read
  the database and cover all); the others only dispatch. Tokens, quota holds and
  leases live in the database, shared as between separate daemons;
- dispatch.rate_limit is split between them (runtime.process_rate).

The supervisor opens no database and starts no thread. It speaks systemd's notify
protocol both ways: the children send READY, WATCHDOG, STATUS and RELOADING to a
socket of its own (their NOTIFY_SOCKET; the kernel tells it which process sent each
datagram), and it tells systemd READY once every child is ready, and pings the
watchdog only while every child is alive and pinging it (or waiting to be started
again). A child that stops pinging for the whole watchdog window is killed.

A child that dies (kill -9, a crash) is started again after a back-off (1 s, doubling
to 30 s; back to 1 s after a minute of good health); the rows it held go back to wait
when their lease runs out (stale_retry) and its successor, which has the same share,
sends them. A child that dies GIVE_UP times within GIVE_UP_WINDOW, or exits 2 (bad
configuration), makes the supervisor stop the others and exit non-zero, so systemd
restarts the unit (Restart=on-failure) or gives up on it.

A child whose supervisor dies (kill -9, the OOM killer; outside systemd nothing else
kills the children) sees within half a second that its parent changed and stops as at
SIGTERM, so no orphan sends beside the next supervisor's children.

SIGTERM (and SIGINT) go to every child, which stop as one process does (no new send,
in-flight ones recorded) within http.timeout + 5 s; a child still there at that bound
is killed. SIGHUP goes to every child; each reloads whole or refuses, as one process
does, and systemd hears READY again when all have answered.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config import Config, ConfigError, load_config
from notify import notify, watchdog_interval

log = logging.getLogger("herald.processes")

SHARE_ENV = "HERALD_DISPATCH_SHARE"  # "k/n": set by the supervisor for its k-th child
# the supervisor's pid, so a child notices when it is gone (kill -9, OOM) and stops
# instead of sending on as an orphan beside the supervisor's next children
PARENT_ENV = "HERALD_DISPATCH_SUPERVISOR"
ROOT = Path(__file__).resolve().parent.parent
BACKOFF_FIRST = 1.0  # seconds before a dead child is started again, doubling...
BACKOFF_MAX = 30.0  # ...up to this
STABLE_AFTER = 60.0  # a child that lived this long starts its back-off afresh
GIVE_UP = 5  # deaths of one child within GIVE_UP_WINDOW: the supervisor exits non-zero
GIVE_UP_WINDOW = 300.0  # (the unit's StartLimitBurst/StartLimitIntervalSec, per child)
START_TIMEOUT = 90.0  # a child not READY this long after its start is killed (the unit's
# TimeoutStartSec)
CHILD_WATCHDOG = 60.0  # seconds: the children's window when systemd gives none
STOP_MARGIN = 5.0  # SIGTERM ends within http.timeout + this
TICK = 0.25  # seconds between looks at the children when nothing arrives
EXIT_RUNTIME, EXIT_USAGE = 1, 2
_UCRED = struct.Struct("3i")  # SCM_CREDENTIALS: pid, uid, gid


def child_share(env: dict[str, str] | os._Environ[str] | None = None) -> tuple[int, int] | None:
    """(k, n) when this process is the k-th dispatch process of a supervisor; None for
    a plain `herald run`. A malformed value is a usage error, never a guess."""
    raw = (os.environ if env is None else env).get(SHARE_ENV)
    if not raw:
        return None
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})", raw)
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)) or int(m.group(2)) < 2:
        raise ConfigError([f"{SHARE_ENV}={raw[:20]!r}: expected k/n with 0 <= k < n "
                           "(set by `herald run` for its dispatch processes only)"])
    return int(m.group(1)), int(m.group(2))


def supervisor_gone(env: dict[str, str] | os._Environ[str] | None = None
                    ) -> Callable[[], bool] | None:
    """For a dispatch process: a check that its supervisor has died (the child was
    handed to another parent), None for a plain `herald run`."""
    raw = (os.environ if env is None else env).get(PARENT_ENV, "")
    if not raw.isascii() or not raw.isdigit():
        return None
    parent = int(raw)
    return lambda: os.getppid() != parent


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic time of its start
    ready: bool = False
    last_ping: float = 0.0
    restart_at: float | None = 0.0  # when to start it (again); None: not to be started
    backoff: float = BACKOFF_FIRST
    deaths: deque[float] = field(default_factory=deque)
    status: str = ""
    reloading: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, cfg: Config, n: int, *, command: list[str] | None = None) -> None:
        self.cfg = cfg
        self.n = n
        self.command = command or child_command(cfg)
        self.children = [Child(k) for k in range(n)]
        self.window = watchdog_interval()  # our own pings to systemd (None: no watchdog)
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.child_window = (int(usec) / 1e6 if self.window and usec.isdigit()
                             else CHILD_WATCHDOG)
        self.stop_asked = False
        self.reload_asked = False
        self.exit_code = 0
        self.told_ready = False
        self.reloading = False
        self.last_status = ""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # abstract namespace: nothing on disk to clean up, nothing another unit can reach
        # by path; SO_PASSCRED makes the kernel name the sending process of each datagram
        self.address = f"@herald-{os.getpid()}-{secrets.token_hex(6)}"
        self.sock.bind("\0" + self.address[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        # signals wake the loop at once through this pipe (the handlers only set flags)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ)

    # -- signals ------------------------------------------------------------------------
    def _on_stop(self, _signum: int, _frame: object) -> None:
        self.stop_asked = True
        self._poke()

    def _on_reload(self, _signum: int, _frame: object) -> None:
        self.reload_asked = True
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # the pipe is full: the loop is awake anyway
            pass

    # -- children -----------------------------------------------------------------------
    def _env(self, k: int) -> dict[str, str]:
        env = dict(os.environ)
        env[SHARE_ENV] = f"{k}/{self.n}"
        env[PARENT_ENV] = str(os.getpid())
        env["NOTIFY_SOCKET"] = self.address
        env["WATCHDOG_USEC"] = str(int(self.child_window * 1e6))
        env.pop("WATCHDOG_PID", None)  # ours; the child's pid is not known before it runs
        return env

    def _start(self, child: Child, now: float) -> None:
        # in this process's working directory: a relative SQLite path means one file
        child.proc = subprocess.Popen(self.command, env=self._env(child.index), close_fds=True)
        child.started, child.ready, child.last_ping = now, False, now
        child.restart_at, child.status, child.reloading = None, "", False
        log.info("dispatch process %d/%d started (pid %d)", child.index, self.n, child.pid)

    def _died(self, child: Child, code: int, now: float) -> None:
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        child.ready = False
        if self.stop_asked:
            log.info("dispatch process %d/%d stopped (%s)", child.index, self.n, how)
            return
        if code == EXIT_USAGE:  # bad configuration: starting it again cannot help
            log.error("dispatch process %d/%d ended with %s (configuration): stopping",
                      child.index, self.n, how)
            self._give_up(EXIT_USAGE)
            return
        if now - child.started >= STABLE_AFTER:
            child.backoff = BACKOFF_FIRST
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > GIVE_UP_WINDOW:
            child.deaths.popleft()
        if len(child.deaths) >= GIVE_UP:
            log.error("dispatch process %d/%d ended (%s), the %dth time in %.0f s: stopping "
                      "the daemon", child.index, self.n, how, len(child.deaths),
                      GIVE_UP_WINDOW)
            self._give_up(EXIT_RUNTIME)
            return
        if self._needs_restart_keys():
            log.error("dispatch process %d/%d ended (%s) and config.yaml has changed "
                      "settings that need a restart: stopping the daemon so that all its "
                      "processes start again on one configuration", child.index, self.n, how)
            self._give_up(EXIT_RUNTIME)
            return
        child.restart_at = now + child.backoff
        log.error("dispatch process %d/%d ended (%s); starting it again in %.0f s (its "
                  "claimed rows go back to wait when their lease runs out)", child.index,
                  self.n, how, child.backoff)
        child.backoff = min(child.backoff * 2, BACKOFF_MAX)

    def _needs_restart_keys(self) -> bool:
        """The file now differs from the one every process started with in a key that
        needs a restart: a child started on it would run another configuration than
        its siblings (another database, other apps)."""
        from reload import RUN_KEYS, changed_keys, classify

        if self.cfg.path is None:
            return False
        try:
            new = load_config(self.cfg.path, strict_secrets=False)
        except ConfigError:
            return False  # the child says what is wrong, exits 2, and that ends it
        return any(classify(k, RUN_KEYS) == "restart" for k in changed_keys(self.cfg, new))

    def _give_up(self, code: int) -> None:
        self.exit_code = self.exit_code or code
        self.stop_asked = True

    def _check(self, now: float) -> None:
        for child in self.children:
            proc = child.proc
            if proc is not None and child.restart_at is None:
                code = proc.poll()
                if code is not None:
                    child.proc = None
                    self._died(child, code, now)
                    continue
                if not child.ready and now - child.started > START_TIMEOUT:
                    log.error("dispatch process %d/%d not ready after %.0f s: killing it",
                              child.index, self.n, START_TIMEOUT)
                    proc.kill()
                elif child.ready and now - child.last_ping > self.child_window:
                    log.error("dispatch process %d/%d sent no watchdog ping for %.0f s "
                              "(hung): killing it", child.index, self.n, self.child_window)
                    proc.kill()
            if self.stop_asked:
                continue
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                # the others start once child 0 (which creates or upgrades the schema and
                # fetches the tokens) has been ready once
                if child.index == 0 or self.children[0].ready or self.told_ready:
                    self._start(child, now)

    # -- messages from the children ---------------------------------------------------
    def _receive(self, now: float) -> None:
        by_pid = {c.pid: c for c in self.children if c.proc is not None}
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            pid = None
            for level, kind, payload in ancdata:
                if (level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                        and len(payload) >= _UCRED.size):
                    pid = _UCRED.unpack_from(payload)[0]
            child = by_pid.get(pid)
            if child is None:
                continue  # not one of ours: ignored
            for line in data.decode("utf-8", "replace").splitlines():
                self._line(child, line, now)

    def _line(self, child: Child, line: str, now: float) -> None:
        if line == "READY=1":
            child.ready, child.last_ping, child.reloading = True, now, False
        elif line == "WATCHDOG=1":
            child.last_ping = now
        elif line.startswith("STATUS="):
            child.status = line[len("STATUS="):][:200]
        elif line == "RELOADING=1":
            child.reloading = True

    # -- systemd --------------------------------------------------------------------
    def _healthy(self, now: float) -> bool:
        """Every child alive and pinging, starting, or waiting for its restart."""
        for child in self.children:
            if child.proc is None:
                continue  # waiting for its restart (the back-off)
            if child.ready and now - child.last_ping > self.child_window:
                return False
        return True

    def _status(self) -> str:
        running = sum(1 for c in self.children if c.ready)
        head = f"{running} of {self.n} dispatch processes running"
        first = self.children[0].status
        return f"{head}; {first}" if first else head

    def _tell_systemd(self, now: float, last_ping: float) -> float:
        if not self.told_ready and all(c.ready for c in self.children):
            self.told_ready = True
            notify("READY=1", f"STATUS={self._status()}")
            log.info("herald running: %d dispatch processes", self.n)
        if self.reloading and not any(c.reloading for c in self.children):
            self.reloading = False
            notify("READY=1", f"STATUS={self._status()}")
        status = self._status()
        if self.told_ready and status != self.last_status:
            notify(f"STATUS={status}")
        self.last_status = status
        if self.window and now - last_ping >= self.window and self._healthy(now):
            notify("WATCHDOG=1")
            return now
        return last_ping

    def _reload(self) -> None:
        self.reload_asked = False
        notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        self.reloading = True
        for child in self.children:
            if child.running():
                assert child.proc is not None
                child.reloading = True
                child.proc.send_signal(signal.SIGHUP)
        log.info("SIGHUP passed to the dispatch processes")

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        log.info("herald starting %d dispatch processes", self.n)
        last_ping = 0.0
        try:
            while not self.stop_asked:
                now = time.monotonic()
                self._check(now)
                if self.reload_asked:
                    self._reload()
                last_ping = self._tell_systemd(now, last_ping)
                self._wait(TICK)
            return self._stop()
        finally:
            self.selector.close()
            self.sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _wait(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.fileobj == self._wake_r:
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass
            else:
                self._receive(time.monotonic())

    def _stop(self) -> int:
        """SIGTERM to every child; those still there at http.timeout + 5 s are killed."""
        notify("STOPPING=1")
        log.info("stopping %d dispatch processes", self.n)
        deadline = time.monotonic() + self.cfg.http.timeout + STOP_MARGIN
        for child in self.children:
            if child.running():
                assert child.proc is not None
                child.proc.send_signal(signal.SIGTERM)
        while True:
            now = time.monotonic()
            left = [c for c in self.children if c.running()]
            if not left:
                break
            if now >= deadline:
                for child in left:
                    log.error("dispatch process %d/%d still running at the stop bound: "
                              "killing it", child.index, self.n)
                    assert child.proc is not None
                    child.proc.kill()
                for child in left:
                    assert child.proc is not None
                    child.proc.wait()
                break
            self._wait(min(TICK, deadline - now))
        for child in self.children:
            if child.proc is not None:
                code = child.proc.wait()
                child.proc = None
                if code not in (0, -signal.SIGTERM) and not self.exit_code:
                    log.warning("dispatch process %d/%d ended with %d while stopping",
                                child.index, self.n, code)
        log.info("herald stopped")
        return self.exit_code


def child_command(cfg: Config) -> list[str]:
    """The command of a child: this same `herald run`, from the same config file."""
    cmd = [sys.executable, str(ROOT / "scheduler.py")]
    if cfg.path is not None:
        cmd += ["--config", str(cfg.path)]
    return [*cmd, "run"]


def supervise(cfg: Config) -> int:
    """`herald run` with dispatch.processes above 1: start, watch and stop the children."""
    return Supervisor(cfg, cfg.dispatch.processes).run()


__all__ = ["PARENT_ENV", "SHARE_ENV", "Supervisor", "child_command", "child_share",
           "supervise", "supervisor_gone"]
