"""The drivers under each engine's Dialect: connection classes with their reconnect
rules, session settings and value conversions. No SQL of Herald's lives here.

- Every server connection runs its session in UTC, so timestamps written by Herald
  and by server defaults agree whatever the host's zone.
- A timestamp reaches each driver in the form its column compares correctly:
  SQLite the text CURRENT_TIMESTAMP writes (with six fraction digits), MySQL a naive
  UTC datetime (TIMESTAMP(6) converts from the session zone), PostgreSQL the aware
  datetime itself. Aware datetimes among a statement's parameters are converted
  here, so the models need not know which database runs their query.
"""

from __future__ import annotations

import sqlite3
import ssl
import threading
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import pymysql.connections
from peewee import (
    InterfaceError,
    MySQLDatabase,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
)
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase
from playhouse.shortcuts import ReconnectMixin


def sqlite_text(value: datetime) -> str:
    """An aware datetime as SQLite's timestamp text.

    The form CURRENT_TIMESTAMP writes, so rows of any program compare as text. Always
    with six fraction digits: isoformat drops them at a whole second, and '12:00:00'
    sorts before the '12:00:00.000' the insert triggers write for the same instant, so
    a row due at exactly `now` was not yet due.
    """
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(
        sep=" ", timespec="microseconds")


def naive_utc(value: datetime) -> datetime:
    """An aware datetime as MySQL's TIMESTAMP(6) takes it from a UTC session."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _convert(params: Any, stamp: Callable[[datetime], object]) -> Any:
    """The statement's parameters with each aware datetime in the driver's form."""
    if not isinstance(params, tuple | list):
        return params  # None, or a mapping: Herald passes neither with timestamps
    if not any(isinstance(v, datetime) and v.tzinfo is not None for v in params):
        return params
    return [stamp(v) if isinstance(v, datetime) and v.tzinfo is not None else v
            for v in params]


class _SqliteStamps:
    def execute_sql(self, sql: str, params: Sequence[object] | None = None,
                    *args: Any, **kwargs: Any) -> Any:
        return super().execute_sql(  # type: ignore[misc]
            sql, _convert(params, sqlite_text), *args, **kwargs)


class _MySQLStamps:
    def execute_sql(self, sql: str, params: Sequence[object] | None = None,
                    *args: Any, **kwargs: Any) -> Any:
        return super().execute_sql(  # type: ignore[misc]
            sql, _convert(params, naive_utc), *args, **kwargs)


class _Reconnecting(ReconnectMixin):
    """ReconnectMixin that keeps peewee's connection-context stack, and a rollback that
    survives the connection it rolls back.

    - ReconnectMixin reconnects with close() + connect(), and close() resets the
      thread's state, including the stack that `connection_context()` pushed: the
      context's exit then pops an empty list (IndexError: pop from empty list) and the
      job that merely rode out a reconnect fails. The stack is saved and restored.
    - A statement is retried on a fresh connection only outside a transaction (inside
      one, the work so far is lost and the caller must know). When the server drops us
      mid-transaction, atomic() then rolls back on the dead connection, and that second
      error would hide the first. The server discarded the transaction with the
      connection, so the rollback has nothing left to do: mark the connection broken
      (the next statement outside a transaction reconnects) and let the original error
      surface.
    """

    @property
    def _broken(self) -> bool:
        # per thread, like the connection itself
        return bool(getattr(self._state, "herald_broken", False))  # type: ignore[attr-defined]

    @_broken.setter
    def _broken(self, value: bool) -> None:
        self._state.herald_broken = value  # type: ignore[attr-defined]

    def connect(self, reuse_if_open: bool = False) -> bool:
        opened = super().connect(reuse_if_open)  # type: ignore[misc]
        if opened:
            self._broken = False
        return bool(opened)

    def _reconnect(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._broken and not self.in_transaction():  # type: ignore[attr-defined]
            self._reopen()
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            # inside a transaction the work so far is gone: the caller must know
            if self.in_transaction() or not self._is_drop(exc):  # type: ignore[attr-defined]
                raise
            self._reopen()
            return func(*args, **kwargs)

    def _is_drop(self, exc: Exception) -> bool:
        fragments = self._reconnect_errors.get(type(exc), ())  # type: ignore[attr-defined]
        text = str(exc).lower()
        return any(f in text for f in fragments)

    def _reopen(self) -> None:
        """A new connection for this thread, keeping the connection_context() stack."""
        ctx = list(self._state.ctx)  # type: ignore[attr-defined]
        try:
            self.close()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the driver may refuse to close a dead socket
            self.dispose()  # type: ignore[attr-defined]
        self.connect()
        self._state.ctx = ctx  # type: ignore[attr-defined]

    def rollback(self) -> None:
        try:
            super().rollback()  # type: ignore[misc]
        except (InterfaceError, OperationalError):
            # inside an outer transaction (an explicit rollback) the caller must see it
            if self.in_transaction() or self.is_connection_usable():  # type: ignore[attr-defined]
                raise
            self._broken = True


PG_RECONNECT_ERRORS = ReconnectMixin.reconnect_errors + (
    (OperationalError, "server closed the connection"),
    (OperationalError, "terminating connection"),
    (OperationalError, "connection already closed"),
    (InterfaceError, "connection already closed"),
    (OperationalError, "could not receive data"),
    (OperationalError, "could not send data"),
    (OperationalError, "SSL connection has been closed"),
    (OperationalError, "SSL SYSCALL error"),
)


class ReconnectingPostgres(_Reconnecting, PostgresqlDatabase):
    """Reconnects when the server dropped us (restart, pg_terminate_backend).

    The first statement on a dropped connection fails with OperationalError
    ("server closed the connection unexpectedly", or "terminating connection" on a
    shutdown), later ones with InterfaceError ("connection already closed"). Outside a
    transaction the statement is retried once on a new connection, so a drop costs
    at most the transaction in progress, never the daemon.
    """

    reconnect_errors = PG_RECONNECT_ERRORS


class ReconnectingPooledPostgres(_Reconnecting, PooledPostgresqlDatabase):
    """postgresql+pool://: connections are kept open between job runs and requests."""

    reconnect_errors = PG_RECONNECT_ERRORS


class _PreferredTLSConnection(pymysql.connections.Connection):
    """PyMySQL's connection, building the default TLS context once per process.

    With no ssl option in the URL PyMySQL tries TLS if the server offers it (its
    PREFERRED mode) and builds a fresh ssl.SSLContext for that on every connect,
    loading the system CA store: 22 of the 25 ms of CPU a connect costs. A plain
    mysql:// URL opens a connection per job run, which made an idle daemon use over
    1 % of a core. The context for that case is always the same and an SSLContext may
    be shared between connections, so it is built once; a connection given ssl
    options builds its own as before."""

    _preferred: ClassVar[ssl.SSLContext | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        if isinstance(sslp, dict) and not sslp:
            cls = _PreferredTLSConnection
            with cls._lock:
                if cls._preferred is None:
                    cls._preferred = super()._create_ssl_ctx(sslp)  # type: ignore[misc]
                return cls._preferred
        return super()._create_ssl_ctx(sslp)  # type: ignore[misc]


class _MySQLConnecting(MySQLDatabase):
    """MySQLDatabase opening its connections with the class above. It comes last in
    the classes below, under the pool (whose _connect hands out kept connections and
    calls this one only for a new connection)."""

    def _connect(self) -> Any:
        # peewee's MySQLDatabase._connect, with the connection class above
        return _PreferredTLSConnection(database=self.database, autocommit=True,
                                       **self.connect_params)


class _MySQLSession:
    """Sessions run in READ COMMITTED, PostgreSQL's default. Under InnoDB's REPEATABLE
    READ every locking scan also locks the gaps and keeps every row it read locked:
    an UPDATE over the waiting rows (expire_overdue, stale_retry) would hold all of
    them, another daemon's claim would skip them all, an application's INSERT would
    wait, and even two claims would queue on each other's index gaps."""


    def _initialize_connection(self, conn: Any) -> None:
        super()._initialize_connection(conn)  # type: ignore[misc]
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")


class ReconnectingMySQL(_Reconnecting, _MySQLSession, _MySQLStamps, _MySQLConnecting):
    """MySQL/MariaDB: ReconnectMixin's defaults cover 2006/2013/2014/4031 and
    PyMySQL's InterfaceError(0, '') on a dead socket (checked against KILL)."""


class ReconnectingPooledMySQL(_Reconnecting, _MySQLSession, _MySQLStamps,
                              PooledMySQLDatabase, _MySQLConnecting):
    """mysql+pool://: connections are kept open between job runs and requests."""


class _BadText(str):
    """A text value SQLite holds that is not valid UTF-8 (another program wrote raw
    bytes). It is a str so that nothing that merely shows it can crash, and its own
    type so that the row decoder can fail that row, naming the column."""

    raw: bytes

    def __new__(cls, raw: bytes) -> _BadText:
        self = super().__new__(cls, raw.decode("utf-8", "replace"))
        self.raw = raw
        return self


def _text_factory(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _BadText(raw)


def _share_hash(raw: object) -> int:
    """SQLite's herald_share(): CRC-32 of the recipient's bytes (what MySQL's CRC32 is).
    Fed a BLOB (the SQL casts), so no text can fail to decode and fail the claim."""
    return zlib.crc32(raw) if isinstance(raw, bytes) else 0


class HeraldSqlite(_SqliteStamps, SqliteDatabase):
    """SQLite with a text decoder that cannot fail a whole query, and a rollback that
    keeps the real error.

    - By default sqlite3 raises while fetching a text column that holds invalid UTF-8,
      which fails the whole SELECT (a claim, a status report) because of one row.
    - When a statement fails with SQLITE_FULL (disk full) or SQLITE_IOERR, SQLite has
      already rolled the transaction back; peewee's own ROLLBACK then fails with
      "cannot rollback - no transaction is active" and that message replaces the one
      an operator needs ("database or disk is full").
    """

    def _initialize_connection(self, conn: sqlite3.Connection) -> None:
        super()._initialize_connection(conn)
        conn.text_factory = _text_factory
        # dispatch.processes: the claim's share of a recipient (db/dialects.py)
        conn.create_function("herald_share", 1, _share_hash, deterministic=True)

    def rollback(self) -> None:
        conn = self._state.conn
        if conn is not None and not conn.in_transaction:
            return  # SQLite ended the transaction itself; nothing to undo
        super().rollback()


__all__ = ["HeraldSqlite", "ReconnectingMySQL", "ReconnectingPooledMySQL",
           "ReconnectingPooledPostgres", "ReconnectingPostgres", "naive_utc", "sqlite_text"]
