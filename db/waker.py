"""Wake dispatch when a row is inserted or falls due, on every engine.

Dispatch polls every `jobs.dispatch.every` (60 s by default). That poll stays the
fallback and the guarantee; this waker only makes rows go out sooner:

- **on insert.** A new MAX(id) (the last entry of the primary key: no rows read) wakes
  dispatch. When it is read: PostgreSQL, on each NOTIFY of the insert trigger (LISTEN
  in db/wakeup.py), and no query otherwise. SQLite, when `PRAGMA data_version` on the
  waker's own connection, read every TICK seconds, has moved: it changes only when
  another connection commits (an application's INSERT, but also dispatch's own result
  writes, which MAX(id) then tells apart). MySQL/MariaDB: every TICK.
- **on due time.** After each dispatch run, and whenever a change is seen, an index
  probe reads the earliest `send_at` among waiting rows; the waker sleeps until then
  (or the next change) and wakes dispatch at that moment, so a row scheduled ahead, or
  put back after a back-off, goes out within a tick of its time rather than at the next
  poll. A due time no later than the start of the last dispatch run is not woken for:
  that run saw the row and left it (a hold, a filter), and waking for it again would
  spin; the poll looks at it again.

What the callback gets, as db/wakeup.py's: at most one call per `debounce` window (a
burst of inserts coalesces; dispatch drains full batches by itself), and a wake inside
the window is never dropped, it is served when the window ends. A database error
closes the waker's connection and it tries again with back-off (0.5 s doubling to
30 s), said once at WARNING; when it is back it wakes dispatch once, since it may have
missed rows meanwhile. Known gaps, all covered by the poll: on MySQL two inserts that
commit in the opposite order of their ids can hide the lower id from MAX(id) (it still
goes out at the next wake or poll); more than MAX_PRIORITIES distinct priorities among
waiting rows limit the MySQL due probe to the highest of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from peewee import Database

import clock
from db.decode import ts_or_none
from db.dialects import dialect, for_url

log = logging.getLogger("herald.waker")

TICK = 0.2  # seconds between change checks (SQLite, MySQL)
IDLE_TICK = 0.5  # PostgreSQL: nothing to check, only stop() to honour
MAX_PRIORITIES = 16  # distinct priorities the MySQL due probe walks


class Probe:
    """The engine's SQL for the waker: a cheap change token and the (MAX(id), earliest
    due) probe. Every statement is an index probe: its cost does not grow with the
    queue."""

    ticks = True  # False: changes arrive by notification, nothing to check per tick

    def token(self, db: Database) -> object:
        """Changes when another connection may have inserted a row."""
        raise NotImplementedError

    def last_id(self, db: Database) -> int | None:
        row = db.execute_sql("SELECT MAX(id) FROM msg_list").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def next_due(self, db: Database) -> datetime | None:
        # SQLite: index msg_list_status (status, send_at); PostgreSQL: the partial
        # index msg_list_due (send_at) WHERE status = 'wait'
        row = db.execute_sql("SELECT MIN(send_at) FROM msg_list WHERE status = 'wait'"
                             ).fetchone()
        return None if row is None else ts_or_none(row[0])


class SqliteProbe(Probe):
    def token(self, db: Database) -> object:
        # per connection: moves when any OTHER connection commits a change to the file
        return db.execute_sql("PRAGMA data_version").fetchone()[0]


class MysqlProbe(Probe):
    def token(self, db: Database) -> object:
        return self.last_id(db)

    def next_due(self, db: Database) -> datetime | None:
        # The only index is the claim's (status, priority DESC, send_at, id): MIN(send_at)
        # over it reads every waiting entry (MariaDB does no loose scan on it), so walk
        # the priorities present, each an index probe, and take the earliest of their
        # first send_at.
        best: datetime | None = None
        prio: Any = None
        for _ in range(MAX_PRIORITIES):
            if prio is None:
                row = db.execute_sql("SELECT priority FROM msg_list WHERE status = 'wait' "
                                     "ORDER BY priority DESC LIMIT 1").fetchone()
            else:
                row = db.execute_sql("SELECT priority FROM msg_list WHERE status = 'wait' "
                                     "AND priority < %s ORDER BY priority DESC LIMIT 1",
                                     (prio,)).fetchone()
            if row is None:
                break
            prio = row[0]
            first = db.execute_sql("SELECT send_at FROM msg_list WHERE status = 'wait' "
                                   "AND priority = %s ORDER BY send_at LIMIT 1",
                                   (prio,)).fetchone()
            due = None if first is None else ts_or_none(first[0])
            if due is not None and (best is None or due < best):
                best = due
        return best


class PostgresProbe(Probe):
    ticks = False  # NOTIFY says when a row arrives

    def token(self, db: Database) -> object:
        return None


PROBES: dict[str, type[Probe]] = {"sqlite": SqliteProbe, "mysql": MysqlProbe,
                                  "postgres": PostgresProbe}


class Waker:
    """One thread on its own connection that calls `on_wake` (for the daemon: run
    dispatch now) when a row is inserted or falls due. start() / stop(); ran() after
    each dispatch run."""

    def __init__(
        self,
        url: str,
        on_wake: Callable[[], None],
        *,
        tick: float = TICK,
        debounce: float = 0.2,
        backoff: tuple[float, float] = (0.5, 30.0),
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.url = url
        self.on_wake = on_wake
        self.debounce = debounce
        self.backoff = backoff
        self.now = now
        self.db: Database = for_url(url).open(url)
        self.probe: Probe = PROBES[dialect(self.db).name]()
        self.tick = tick if self.probe.ticks else IDLE_TICK
        # counters for tests and diagnostics
        self.calls = 0  # on_wake calls made
        self.due_wakes = 0  # of which a row falling due started the window
        self.probes = 0  # (MAX(id), earliest due) probes run
        self.failures = 0  # database errors met
        self.retry_waits: list[float] = []  # back-off waits after them (tests)
        self.armed: datetime | None = None  # the due time it will wake dispatch at
        self._stop = threading.Event()
        self._poke = threading.Event()  # ends the thread's wait: ran(), changed(), stop()
        self._lock = threading.Lock()
        self._reprobe = True
        self._cutoff: datetime | None = None  # start of the last finished dispatch run
        self._token: object = None
        self._last_id: int | None = None
        self._pending = False
        self._last_call = float("-inf")
        self._thread: threading.Thread | None = None
        self._listener: Any = None  # db.wakeup.PgWakeup on PostgreSQL

    # -- control -----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Waker already started")
        self._stop.clear()
        if not self.probe.ticks:
            from db.wakeup import PgWakeup

            self._listener = PgWakeup(self.url, self.changed, debounce=self.debounce)
            self._listener.start()
        self._thread = threading.Thread(target=self._run, name="herald-waker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._poke.set()
        if self._listener is not None:
            self._listener.stop(timeout)
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def ran(self, started: datetime) -> None:
        """A dispatch run that began at `started` has finished: read the next due time
        again (the run took rows, put some back with a later send_at)."""
        with self._lock:
            if self._cutoff is None or started > self._cutoff:
                self._cutoff = started
            self._reprobe = True
        self._poke.set()

    def changed(self) -> None:
        """A row was inserted (PostgreSQL NOTIFY): probe now (MAX(id) moved: wake
        dispatch; and read the due time)."""
        with self._lock:
            self._reprobe = True
        self._poke.set()

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._close()  # peewee's connections are per thread: this one's goes here

    def _loop(self) -> None:
        delay = self.backoff[0]
        failing = False
        while not self._stop.is_set():
            try:
                self._check()
                if failing:
                    log.info("wake-up checks work again; waking dispatch once")
                    failing, delay = False, self.backoff[0]
                    self._pending = True  # rows may have arrived while we were away
                self._serve()
                self._wait()
            except Exception as exc:  # noqa: BLE001 - the poll carries on; try again later
                self.failures += 1
                (log.debug if failing else log.warning)(
                    "wake-up check failed (%s); retrying in %.1fs; dispatch still runs "
                    "every poll", str(exc).strip()[:160], delay)
                failing = True
                self._close()
                with self._lock:
                    self._reprobe = True
                self._token = None
                self.retry_waits.append(delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])

    def _check(self) -> None:
        with self._lock:
            reprobe, self._reprobe = self._reprobe, False
        if self.probe.ticks:
            token = self.probe.token(self.db)
            if token != self._token:
                reprobe = True
                self._token = token
        if reprobe:
            self._probe()
        armed = self.armed
        if armed is not None and self.now() >= armed:
            self.armed = None  # once: the run it starts re-arms through ran()
            if not self._pending:
                self.due_wakes += 1
            self._pending = True

    def _probe(self) -> None:
        self.probes += 1
        last_id = self.probe.last_id(self.db)
        last_id = last_id or 0  # an empty table
        if self._last_id is not None and last_id > self._last_id:
            self._pending = True  # a row was inserted
        self._last_id = last_id
        due = self.probe.next_due(self.db)
        with self._lock:
            cutoff = self._cutoff
        # a row due before the last run began was seen by it and left: not woken for
        self.armed = due if due is not None and (cutoff is None or due > cutoff) else None

    def _serve(self) -> None:
        if self._pending and time.monotonic() - self._last_call >= self.debounce:
            self._pending = False
            self._last_call = time.monotonic()
            self.calls += 1
            try:
                self.on_wake()
            except Exception:
                # a failing callback must not end the waker; the poll still runs
                log.exception("wake-up: on_wake failed")

    def _wait(self) -> None:
        timeout = self.tick
        if self.armed is not None:
            timeout = min(timeout, (self.armed - self.now()).total_seconds())
        if self._pending:
            timeout = min(timeout, self._last_call + self.debounce - time.monotonic())
        if timeout > 0:
            self._poke.wait(timeout)
        self._poke.clear()

    def _close(self) -> None:
        try:
            self.db.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail too
            pass


def for_daemon(url: str, enabled: bool, on_wake: Callable[[], None]) -> Waker | None:
    """The daemon's waker (None when `dispatch.wake` is off: the poll alone)."""
    return Waker(url, on_wake) if enabled else None


__all__ = ["MAX_PRIORITIES", "PROBES", "TICK", "Waker", "for_daemon"]
