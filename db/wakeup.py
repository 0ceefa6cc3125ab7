"""Wake dispatch at once when a row arrives: PostgreSQL LISTEN/NOTIFY.

db/ddl/postgres.sql installs an AFTER INSERT trigger that runs NOTIFY herald_msg_list.
PgWakeup listens on its own connection in a daemon thread and calls on_notify (for
the daemon: run dispatch now). Polling stays the fallback and the guarantee: a lost
notification (connection down, daemon busy) only delays a row until the next poll.

- at most one call per debounce window: a burst of 10 000 single-row inserts wakes
  dispatch a handful of times, not 10 000 (dispatch drains full batches by itself);
  a notification inside the window is never dropped, it is served when the window
  ends, so a row inserted just after dispatch claimed still goes out at once;
- the connection is autocommit (LISTEN takes effect at once, and an idle listener
  holds no transaction open) and has TCP keepalives (a half-open connection behind
  a NAT is noticed instead of waiting silently forever);
- a dropped connection is reopened with back-off, then on_notify runs once, since
  notifications sent while it was down are gone;
- stop() is honoured within about `tick` seconds: the thread never blocks longer.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions

from db.urls import url_params

log = logging.getLogger("herald.wakeup")

CHANNEL = "herald_msg_list"


class PgWakeup:
    def __init__(
        self,
        url: str,
        on_notify: Callable[[], None],
        *,
        debounce: float = 0.2,
        tick: float = 0.5,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if not url.lower().startswith("postgres"):
            raise ValueError("LISTEN/NOTIFY wake-up needs a PostgreSQL database URL")
        self.url = url
        self.on_notify = on_notify
        self.debounce = debounce
        self.tick = tick
        self.backoff = backoff
        self.calls = 0  # on_notify calls made (tests, metrics)
        self.connects = 0  # successful LISTENs; more than one means reconnects
        self.backend_pid: int | None = None  # of the listening connection (tests)
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PgWakeup already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="herald-pg-wakeup", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_listening(self, timeout: float) -> bool:
        """True once LISTEN is in force (tests; start-up diagnostics)."""
        return self._listening.wait(timeout)

    # -- the thread ------------------------------------------------------------------
    def _connect(self) -> psycopg2.extensions.connection:
        params: dict[str, Any] = url_params(self.url)
        name = params.pop("database")
        params.setdefault("connect_timeout", 10)
        params.setdefault("keepalives", 1)
        params.setdefault("keepalives_idle", 30)
        params.setdefault("keepalives_interval", 10)
        params.setdefault("keepalives_count", 3)
        params.setdefault("application_name", "herald-wakeup")
        conn = psycopg2.connect(dbname=name, **params)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        return conn

    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except psycopg2.Error as exc:
                log.warning("LISTEN %s: cannot connect (%s); retry in %.1fs; polling "
                            "continues meanwhile", CHANNEL, str(exc).strip(), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            self.connects += 1
            self.backend_pid = conn.get_backend_pid()
            self._listening.set()
            if self.connects > 1:
                log.info("LISTEN %s: reconnected", CHANNEL)
                self._fire()  # rows may have arrived while we were away
            try:
                self._listen(conn)
            except (psycopg2.Error, OSError) as exc:
                log.warning("LISTEN %s: connection lost (%s); reconnecting", CHANNEL,
                            str(exc).strip())
            finally:
                self._listening.clear()
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
            if not self._stop.is_set():
                self._stop.wait(delay)

    def _listen(self, conn: psycopg2.extensions.connection) -> None:
        last_call = float("-inf")
        pending = False
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = self.tick
            if pending:
                timeout = max(0.0, min(timeout, last_call + self.debounce - now))
            readable, _, _ = select.select([conn], [], [], timeout)
            if readable:
                conn.poll()  # raises when the server closed the connection
                if conn.notifies:
                    conn.notifies.clear()
                    pending = True
            elif conn.closed:
                raise psycopg2.OperationalError("connection closed")
            if pending and time.monotonic() - last_call >= self.debounce:
                pending = False
                last_call = time.monotonic()
                self._fire()

    def _fire(self) -> None:
        self.calls += 1
        try:
            self.on_notify()
        except Exception:
            # a failing callback must not end the listener; the poll still runs
            log.exception("LISTEN %s: on_notify failed", CHANNEL)


__all__ = ["CHANNEL", "PgWakeup"]
