"""Catching a database lock held across a network call, two ways.

- `open_transaction(db)`: whether the calling thread's own connection is inside a
  transaction, asked of the driver (sqlite3's in_transaction, psycopg2's transaction
  status, PyMySQL's server status), so a raw BEGIN counts as much as peewee's atomic().
- `LockProbe(url).check(wait)`: from a connection of its own, whether the database takes
  a write within `wait` seconds: SQLite's write lock (BEGIN IMMEDIATE), and on PostgreSQL
  and MySQL the row locks of every row of access_token, msg_list and push_event.

`NetworkWatch(db, url)` patches urllib3's HTTPConnectionPool.urlopen, the one door every
remote call of Herald goes through (WeChat through channels/http.py's Caller, Tencent
Cloud SMS and webhooks through requests, which calls it too): at each call it
records whether the calling thread is in a transaction, and, with `probe_during`, runs
a LockProbe while the call is in flight (the remote must be slow enough for the probe
to see a held lock: a lock held across the call is held for the whole of it).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from urllib3.connectionpool import HTTPConnectionPool

from db.connection import open_database
from db.dialects import url_params

PROBED_TABLES = ("access_token", "msg_list", "push_event")


def open_transaction(db: Any) -> bool:
    """Whether this thread's connection to `db` is inside a transaction now."""
    conn = getattr(db._state, "conn", None)
    if conn is None:
        return False
    if isinstance(conn, sqlite3.Connection):
        return conn.in_transaction
    info = getattr(conn, "info", None)
    if info is not None and hasattr(info, "transaction_status"):  # psycopg2
        import psycopg2.extensions as ext

        return bool(info.transaction_status != ext.TRANSACTION_STATUS_IDLE)
    status = getattr(conn, "server_status", None)
    if status is not None:  # PyMySQL
        from pymysql.constants import SERVER_STATUS

        return bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)
    raise TypeError(f"unknown connection type {type(conn).__name__}")


class LockProbe:
    """Does the database take a write now? From a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url

    def check(self, wait: float = 1.0) -> str | None:
        """None if a writer got through within `wait` seconds, else what stopped it."""
        if self.url.startswith("sqlite"):
            path = str(url_params(self.url)["database"])
            conn = sqlite3.connect(path, timeout=wait, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return None
            except sqlite3.OperationalError as exc:
                return f"sqlite: {exc}"
            finally:
                conn.close()
        db = open_database(self.url)
        try:
            with db.connection_context():
                if self.url.startswith("postgres"):
                    db.execute_sql(f"SET lock_timeout = '{int(wait * 1000)}ms'")
                else:
                    db.execute_sql(f"SET SESSION innodb_lock_wait_timeout = {max(1, round(wait))}")
                try:
                    with db.atomic():
                        for table in PROBED_TABLES:
                            db.execute_sql(f"SELECT * FROM {table} FOR UPDATE").fetchall()
                    return None
                except Exception as exc:  # noqa: BLE001 - the answer is the text
                    return f"{type(exc).__name__}: {exc}"
        finally:
            db.close()


@dataclass
class Violation:
    where: str  # the HTTP call's URL path
    what: str  # "transaction open on this thread" or the probe's error
    stack: str


@dataclass
class NetworkWatch:
    db: Any
    url: str
    probe_during: bool = False
    probe_wait: float = 1.0
    calls: int = 0
    probes: int = 0
    violations: list[Violation] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def watching(self) -> Iterator[NetworkWatch]:
        original = HTTPConnectionPool.urlopen
        watch = self

        def urlopen(pool: HTTPConnectionPool, method: str, url: str, *args: Any,
                    **kw: Any) -> Any:
            path = str(url).split("?")[0]
            with watch._lock:
                watch.calls += 1
            if open_transaction(watch.db):
                watch._record(path, "a transaction is open on the calling thread")
            prober = None
            if watch.probe_during:
                prober = threading.Thread(target=watch._probe, args=(path,), daemon=True)
                prober.start()
            try:
                return original(pool, method, url, *args, **kw)
            finally:
                if prober is not None:
                    prober.join()

        HTTPConnectionPool.urlopen = urlopen  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            HTTPConnectionPool.urlopen = original  # type: ignore[method-assign]

    def _probe(self, path: str) -> None:
        time.sleep(0.05)  # let the call get under way
        problem = LockProbe(self.url).check(self.probe_wait)
        with self._lock:
            self.probes += 1
        if problem:
            self._record(path, f"no write got through during the call: {problem}")

    def _record(self, path: str, what: str) -> None:
        with self._lock:
            self.violations.append(Violation(path, what, "".join(traceback.format_stack(limit=12))))

    def report(self) -> str:
        return "\n".join(f"{v.where}: {v.what}\n{v.stack}" for v in self.violations[:3])
