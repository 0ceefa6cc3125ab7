"""One object per database engine: everything Herald does differently on SQLite,
PostgreSQL and MySQL/MariaDB lives here, behind the same methods.

A Dialect knows how to open a connection from a URL (with the session in UTC and the
reconnect rules of its driver), how a timestamp travels to its driver, how to claim due
rows and write a group of results in one statement, how to lock a row, which errors
are worth retrying (deadlocks, lock timeouts), and where its reference DDL lives. An
unknown URL scheme is an error, never a silent SQLite.

Callers get the dialect of an open database with `dialect(db)`, and of a URL with
`for_url(url)`.
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from peewee import (
    Database,
    InterfaceError,
    MySQLDatabase,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
)
from playhouse.db_url import parse
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase
from playhouse.shortcuts import ReconnectMixin

DDL_DIR = Path(__file__).parent / "ddl"
_FIXED = re.compile(r":([a-z_]+)\b")
_REF = re.compile(r"\b(v)\.(\w+)|:([a-z_]+)\b")
# The recipient a row's share is taken from: its openid (WeChat answers 43108 to two
# sends to one openid at once), or its phone when it has none (an SMS row).
SHARE_KEY = "COALESCE(NULLIF(openid, ''), phone, '')"


Share = tuple[int, int]  # (k, n): the k-th of n dispatch processes (service/processes.py)


class UnsupportedDatabase(ValueError):
    """A database URL whose scheme names no engine Herald supports."""


def url_params(url: str) -> dict[str, Any]:
    """Connection parameters of a database URL (database, user, host, port, ...).

    User and password are percent-decoded, as libpq and the mysql client do, so a
    password holding '@', ':' or '/' can be written in the URL (as %40, %3A, %2F).
    """
    return parse(url, unquote_password=True, unquote_user=True)


# ------------------------------------------------------------------ connection classes


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


class ReconnectingMySQL(_Reconnecting, _MySQLSession, MySQLDatabase):
    """MySQL/MariaDB: ReconnectMixin's defaults cover 2006/2013/2014/4031 and
    PyMySQL's InterfaceError(0, '') on a dead socket (checked against KILL)."""


class ReconnectingPooledMySQL(_Reconnecting, _MySQLSession, PooledMySQLDatabase):
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


class HeraldSqlite(SqliteDatabase):
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
        conn.create_function("herald_share", 1, _share_hash, deterministic=True)

    def rollback(self) -> None:
        conn = self._state.conn
        if conn is not None and not conn.in_transaction:
            return  # SQLite ended the transaction itself; nothing to undo
        super().rollback()


# ------------------------------------------------------------------ the dialects


class Dialect:
    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    param: ClassVar[str] = "%s"
    # errors after which the whole transaction may simply be tried again
    retry_fragments: ClassVar[tuple[str, ...]] = ()

    # -- connections -------------------------------------------------------------
    def open(self, url: str) -> Database:
        raise NotImplementedError

    # -- schema ------------------------------------------------------------------
    @property
    def ddl_path(self) -> Path:
        return DDL_DIR / f"{self.name}.sql"

    def ddl(self) -> str:
        return self.ddl_path.read_text(encoding="utf-8")

    # -- values ------------------------------------------------------------------
    def ts(self, value: datetime) -> object:
        """An aware UTC datetime as this driver should receive it."""
        return value

    # -- errors ------------------------------------------------------------------
    def is_retryable(self, exc: BaseException) -> bool:
        """A deadlock or lock timeout: the transaction was rolled back, try it again."""
        text = str(exc).lower()
        return any(f in text for f in self.retry_fragments)

    def is_refused_value(self, exc: BaseException) -> bool:
        """The server refused a value of the statement (beyond peewee's DataError and
        IntegrityError): running the same statement again cannot help."""
        return False

    # -- claims ------------------------------------------------------------------
    # The claim's attempts+1. attempts is an application-writable column: 2^31-1 would
    # overflow INT (PostgreSQL and MySQL then refuse the whole claim UPDATE, and no row
    # at all is sent again), so the count stops just below the top of the range.
    next_attempt: ClassVar[str] = "LEAST(attempts, 2147483646) + 1"

    def pick_sql(self, columns: str = "id", share: Share | None = None) -> str:
        """The claim's SELECT of due rows (one shape on every engine): what the claim
        index serves. Parameters: now, limit. `share` (k, n): only the rows whose
        recipient hashes to k of n (dispatch.processes: each process claims its own)."""
        p = self.param
        where = ""
        if share is not None:
            k, n = share
            if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
                raise ValueError(f"bad dispatch share {share!r}")
            where = f" AND {self.share_of(SHARE_KEY, n)} = {k}"
        return (f"SELECT {columns} FROM msg_list WHERE status = 'wait' AND send_at <= {p}"
                f"{where} ORDER BY priority DESC, send_at, id LIMIT {p}")

    def share_of(self, key: str, n: int) -> str:
        """SQL for the share (0 to n-1) of the text expression `key`: a hash of it
        modulo n, the same for one value in every session of this engine. (MOD(), not
        %: the drivers of the servers read % as a parameter mark.)"""
        raise NotImplementedError

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        """Move up to `limit` due rows to sending (inside the caller's transaction) and
        return their `returning` columns, undecoded."""
        raise NotImplementedError

    def concat(self, *parts: str) -> str:
        """SQL that joins text expressions (MySQL's || means OR)."""
        return " || ".join(parts)

    # -- grouped writes ------------------------------------------------------------
    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        """UPDATE `table` (alias t) from a list of value rows (alias v), in one go.

        columns: the value rows' (name, PostgreSQL type); sets: (column, expression)
        where expressions may use t.<col>, v.<name> and :<fixed>; where: the join and
        filter, in the same terms. Returns the number of rows changed.
        """
        raise NotImplementedError

    def insert_many(self, cursor: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple]) -> None:
        """INSERT many rows in one statement (or the driver's cheapest loop)."""
        if not rows:
            return
        marks = ", ".join([self.param] * len(columns))
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                           list(rows))

    def _fixed(self, sql: str, fixed: dict[str, object]) -> tuple[str, list[object]]:
        """:name placeholders -> driver placeholders, with their values in order."""
        params: list[object] = []

        def sub(m: re.Match[str]) -> str:
            params.append(fixed[m.group(1)])
            return self.param

        return _FIXED.sub(sub, sql), params

    # -- locks -------------------------------------------------------------------
    def for_update(self, query: Any) -> Any:
        """A SELECT that locks its rows until the transaction ends."""
        return query.for_update()

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        """INSERT that does nothing when `conflict` (a unique column) already holds the
        value: WeChat retries a push, an application reports a grant twice."""
        raise NotImplementedError


class SQLite(Dialect):
    name = "sqlite"
    schemes = ("sqlite",)
    param = "?"
    retry_fragments = ("database is locked",)
    # SQLite keeps whatever type was written: 1.5 would claim as 2.5, which no decoder
    # reads as an attempt count (the row could never be failed, only claimed again),
    # and 2^63-1 + 1 becomes a REAL no driver binds back. Made an integer at the claim.
    next_attempt = "MIN(CAST(attempts AS INTEGER), 2147483646) + 1"

    def open(self, url: str) -> Database:
        params = url_params(url)
        path = params.pop("database")
        if path in ("", ":memory:"):
            raise UnsupportedDatabase(
                "database: an in-memory SQLite database cannot hold a queue")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = HeraldSqlite(
            path,
            # WAL lets readers (status, metrics, other programs inserting rows) work
            # beside the writer; busy_timeout rides out short lock waits instead of
            # failing at once; IMMEDIATE takes the write lock at BEGIN, so two writers
            # never deadlock upgrading a read lock.
            pragmas={"journal_mode": "wal", "busy_timeout": 10000, "synchronous": "normal"},
            timeout=10,
            lock_type="IMMEDIATE",
        )
        return db

    def ts(self, value: datetime) -> object:
        # the form CURRENT_TIMESTAMP writes, so rows of any program compare as text.
        # Always with six fraction digits: isoformat drops them at a whole second, and
        # '12:00:00' sorts before the '12:00:00.000' the insert triggers write for the
        # same instant, so a row due at exactly `now` was not yet due.
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(
            sep=" ", timespec="microseconds")

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        # SQLite has one writer: BEGIN IMMEDIATE (lock_type) already excludes others.
        sql = (f"UPDATE msg_list SET {sets} WHERE id IN ({self.pick_sql(share=share)}) "
               f"RETURNING {returning}")
        return list(db.execute_sql(sql, (*set_params, now, limit)).fetchall())

    def for_update(self, query: Any) -> Any:
        # the transaction began IMMEDIATE and holds the database's write lock
        return query

    def share_of(self, key: str, n: int) -> str:
        # no hash built in: HeraldSqlite registers herald_share (CRC-32) on each connection
        return f"herald_share(CAST({key} AS BLOB)) % {n}"

    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        # One parameterised UPDATE run for each row by the driver's C loop: cheaper on
        # SQLite than one big statement to parse, and there is no round trip to save.
        names = [c for c, _ in columns]
        sql = (f"UPDATE {table} AS t SET " + ", ".join(f"{c} = {e}" for c, e in sets)
               + f" WHERE {where}")
        order: list[tuple[str, str]] = []

        def sub(m: re.Match[str]) -> str:
            order.append(("v", m.group(2)) if m.group(1) else ("f", m.group(3)))
            return "?"

        sql = _REF.sub(sub, sql)
        picks = [("v", names.index(n)) if kind == "v" else ("f", n) for kind, n in order]
        cursor.executemany(sql, [
            tuple(row[i] if kind == "v" else fixed[i] for kind, i in picks)  # type: ignore[index]
            for row in rows])
        return int(cursor.rowcount)

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        marks = ", ".join("?" for _ in columns)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON CONFLICT ({conflict}) DO NOTHING")


class Postgres(Dialect):
    name = "postgres"
    schemes = ("postgres", "postgresql")
    # 40P01 deadlock_detected, 40001 serialization_failure, 55P03 lock_not_available
    retry_fragments = ("deadlock detected", "could not serialize access",
                       "canceling statement due to lock timeout")

    def open(self, url: str) -> Database:
        params = url_params(url)
        name = params.pop("database")
        params.setdefault("options", "-c timezone=UTC")
        params.setdefault("connect_timeout", 10)
        if _pooled(url):
            params.setdefault("max_connections", 32)
            params.setdefault("stale_timeout", 300)
            return ReconnectingPooledPostgres(name, **params)
        return ReconnectingPostgres(name, **params)

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        # A materialized CTE runs the locking SELECT exactly once. With
        # `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` the planner may rescan
        # the subquery (the inner side of a nested loop), and each rescan skips the
        # rows the previous one locked: more than n rows claimed.
        sql = (f"WITH picked AS MATERIALIZED ({self.pick_sql(share=share)} FOR UPDATE SKIP LOCKED) "
               f"UPDATE msg_list SET {sets} FROM picked WHERE msg_list.id = picked.id "
               f"RETURNING {_qualify(returning, 'msg_list')}")
        # the CTE comes first in the statement, so do its parameters
        return list(db.execute_sql(sql, (now, limit, *set_params)).fetchall())

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        marks = ", ".join("%s" for _ in columns)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON CONFLICT ({conflict}) DO NOTHING")

    def share_of(self, key: str, n: int) -> str:
        # hashtext: int4, stable for a value on one server (what hash indexes use);
        # masked to 31 bits, so the remainder is never negative
        return f"MOD(hashtext({key}) & 2147483647, {n})"

    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        """One UPDATE ... FROM (VALUES ...) for the whole group: one round trip."""
        from psycopg2.extras import execute_values

        sql = (f"UPDATE {table} AS t SET " + ", ".join(f"{c} = {e}" for c, e in sets)
               + f" FROM (VALUES __ROWS__) AS v({', '.join(c for c, _ in columns)}) "
               f"WHERE {where}")
        sql, params = self._fixed(sql, fixed)
        # execute_values takes a single %s for the VALUES list and cannot mix it with
        # other parameters, so the fixed ones are bound first.
        sql = cursor.mogrify(sql.replace("%", "%%").replace("%%s", "%s"), params).decode()
        template = "(" + ", ".join(f"%s::{t}" for _, t in columns) + ")"
        execute_values(cursor, sql.replace("__ROWS__", "%s"), list(rows), template=template,
                       page_size=max(1, len(rows)))
        return int(cursor.rowcount)

    def insert_many(self, cursor: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple]) -> None:
        if not rows:
            return
        from psycopg2.extras import execute_values

        execute_values(cursor, f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s",
                       list(rows), page_size=max(1, len(rows)))


class MySQL(Dialect):
    name = "mysql"
    schemes = ("mysql",)
    # 1213 deadlock, 1205 lock wait timeout
    retry_fragments = ("1213", "deadlock found", "1205", "lock wait timeout")

    # 1048 NULL into NOT NULL, 1264/1690 out of range, 1265 truncated, 1292 incorrect
    # datetime (a TIMESTAMP past 2038), 1366 incorrect string, 1406 too long: PyMySQL
    # raises some of these as OperationalError, like a lost connection
    refused_codes: ClassVar[frozenset[int]] = frozenset(
        {1048, 1264, 1265, 1292, 1366, 1406, 1690})

    def is_refused_value(self, exc: BaseException) -> bool:
        code = exc.args[0] if exc.args else None
        return isinstance(code, int) and code in self.refused_codes

    def open(self, url: str) -> Database:
        params = url_params(url)
        name = params.pop("database")
        params.setdefault("init_command", "SET time_zone = '+00:00'")
        params.setdefault("charset", "utf8mb4")
        params.setdefault("connect_timeout", 10)
        if _pooled(url):
            params.setdefault("max_connections", 32)
            params.setdefault("stale_timeout", 300)
            return ReconnectingPooledMySQL(name, **params)
        return ReconnectingMySQL(name, **params)

    def ts(self, value: datetime) -> object:
        # TIMESTAMP(6) converts from the session zone, which Herald sets to UTC
        return value.astimezone(UTC).replace(tzinfo=None)

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        """SELECT ... FOR UPDATE SKIP LOCKED, UPDATE by id, read back: one transaction.

        No UPDATE ... RETURNING on MySQL. READ COMMITTED: InnoDB then takes no gap
        locks (an application's INSERT never waits for a claim) and drops the locks on
        rows it read but did not match (a high-priority row scheduled for later), so
        only the claimed rows stay locked.
        """
        cur = db.execute_sql(self.pick_sql(share=share) + " FOR UPDATE SKIP LOCKED", (now, limit))
        ids = [r[0] for r in cur.fetchall()]
        if not ids:
            return []
        marks = ", ".join(["%s"] * len(ids))
        db.execute_sql(f"UPDATE msg_list SET {sets} WHERE id IN ({marks})", (*set_params, *ids))
        return list(db.execute_sql(
            f"SELECT {returning} FROM msg_list WHERE id IN ({marks})", ids).fetchall())

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        # not INSERT IGNORE: that would also turn a bad value into a warning
        marks = ", ".join("%s" for _ in columns)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON DUPLICATE KEY UPDATE {conflict} = {conflict}")

    def concat(self, *parts: str) -> str:
        return f"CONCAT({', '.join(parts)})"

    def share_of(self, key: str, n: int) -> str:
        return f"MOD(CRC32({key}), {n})"

    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        """One UPDATE joined to a derived table of the group's values (MySQL's
        executemany would be a round trip per row)."""
        names = [c for c, _ in columns]
        first = "SELECT " + ", ".join(f"%s AS {c}" for c in names)
        rest = "SELECT " + ", ".join(["%s"] * len(names))
        derived = " UNION ALL ".join([first] + [rest] * (len(rows) - 1))
        tail, params = self._fixed(
            "SET " + ", ".join(f"t.{c} = {e}" for c, e in sets) + f" WHERE {where}", fixed)
        sql = f"UPDATE {table} AS t JOIN ({derived}) AS v ON TRUE {tail}"
        cursor.execute(sql, [value for row in rows for value in row] + params)
        return int(cursor.rowcount)


def _pooled(url: str) -> bool:
    return "+pool" in url.split(":", 1)[0].lower()


def _qualify(columns: str, table: str) -> str:
    return ", ".join(f"{table}.{c.strip()}" for c in columns.split(","))


DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLite(), Postgres(), MySQL())}
NAMES = tuple(DIALECTS)


def for_url(url: str) -> Dialect:
    """The dialect a database URL names; UnsupportedDatabase for any other scheme."""
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    engine, _, variant = scheme.partition("+")
    if variant not in ("", "pool"):
        engine = ""
    for d in DIALECTS.values():
        if engine in d.schemes:
            return d
    raise UnsupportedDatabase(
        f"database: unsupported URL scheme {scheme or url[:20]!r} (use sqlite:///file.db, "
        "postgresql://user@host/db or mysql://user@host/db; +pool for a connection pool)")


def dialect(db: Database) -> Dialect:
    """The dialect of an open (or proxied) database."""
    obj = getattr(db, "obj", None)  # a DatabaseProxy
    if obj is not None:
        db = obj
    if isinstance(db, PostgresqlDatabase):
        return DIALECTS["postgres"]
    if isinstance(db, MySQLDatabase):
        return DIALECTS["mysql"]
    if isinstance(db, SqliteDatabase):
        return DIALECTS["sqlite"]
    raise UnsupportedDatabase(f"not a database Herald supports: {type(db).__name__}")


__all__ = ["DIALECTS", "NAMES", "Dialect", "MySQL", "Postgres", "SQLite",
           "UnsupportedDatabase", "dialect", "for_url", "url_params"]
