"""Open the queue database from a URL and create its schema.

One URL names the engine: sqlite:///path (embedded default), postgresql://...,
mysql://... The session of every connection runs in UTC, so timestamps written by
Herald and by server defaults agree whatever the host's zone.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from peewee import (
    Database,
    InterfaceError,
    MySQLDatabase,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
)
from playhouse.db_url import parse
from playhouse.shortcuts import ReconnectMixin

from db.models import AccessToken, MsgList, database

DDL_DIR = Path(__file__).parent / "ddl"
DIALECTS = ("sqlite", "postgres", "mysql")


class _Reconnecting(ReconnectMixin):
    """ReconnectMixin, plus a rollback that survives the connection it rolls back.

    ReconnectMixin retries a statement on a fresh connection only outside a
    transaction (inside one, the work so far is lost and the caller must know). When
    the server drops us mid-transaction, atomic() then rolls back on the dead
    connection, and that second error would hide the first. The server discarded the
    transaction with the connection, so the rollback has nothing left to do: close
    our end (the next statement reconnects) and let the original error surface.
    """

    def rollback(self) -> None:
        try:
            super().rollback()
        except (InterfaceError, OperationalError):
            # inside an outer transaction (an explicit rollback) the caller must see it
            if self.in_transaction() or self.is_connection_usable():
                raise
            try:
                self.close()
            except Exception:  # the driver may refuse to close a dead socket twice
                self.dispose()


class ReconnectingPostgres(_Reconnecting, PostgresqlDatabase):
    """Reconnects when the server dropped us (restart, pg_terminate_backend).

    The first statement on a dropped connection fails with OperationalError
    ("server closed the connection unexpectedly", or "terminating connection" on a
    shutdown), later ones with InterfaceError ("connection already closed"). Outside a
    transaction the statement is retried once on a new connection, so a drop costs
    at most the transaction in progress, never the daemon.
    """

    reconnect_errors = ReconnectMixin.reconnect_errors + (
        (OperationalError, "server closed the connection"),
        (OperationalError, "terminating connection"),
        (OperationalError, "connection already closed"),
        (InterfaceError, "connection already closed"),
        (OperationalError, "could not receive data"),
        (OperationalError, "could not send data"),
        (OperationalError, "SSL connection has been closed"),
        (OperationalError, "SSL SYSCALL error"),
    )


class ReconnectingMySQL(_Reconnecting, MySQLDatabase):
    """MySQL/MariaDB: ReconnectMixin's defaults cover 2006/2013/2014/4031 and
    PyMySQL's InterfaceError(0, '') on a dead socket (checked against KILL).

    Sessions run in READ COMMITTED, PostgreSQL's default. Under InnoDB's REPEATABLE
    READ every locking scan also locks the gaps and keeps every row it read locked:
    an UPDATE over the waiting rows (expire_overdue, stale_retry) would hold all of
    them, another daemon's claim would skip them all, an application's INSERT would
    wait, and even two claims would queue on each other's index gaps.
    """

    def _initialize_connection(self, conn) -> None:
        super()._initialize_connection(conn)
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")


def dialect_of(db: Database) -> str:
    if isinstance(db, PostgresqlDatabase):
        return "postgres"
    if isinstance(db, MySQLDatabase):
        return "mysql"
    return "sqlite"


def url_params(url: str) -> dict[str, Any]:
    """Connection parameters of a database URL (database, user, host, port, ...).

    User and password are percent-decoded, as libpq and the mysql client do, so a
    password holding '@', ':' or '/' can be written in the URL (as %40, %3A, %2F).
    """
    return parse(url, unquote_password=True, unquote_user=True)


def open_database(url: str) -> Database:
    """A peewee Database for `url`, not yet connected (connections open lazily)."""
    scheme = url.split(":", 1)[0].lower()
    params = url_params(url)
    if scheme.startswith("sqlite"):
        path = params.pop("database")
        if path in ("", ":memory:"):
            raise ValueError("database: an in-memory SQLite database cannot hold a queue")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(
            path,
            # WAL lets readers (status, metrics, other programs inserting rows) work
            # beside the writer; busy_timeout rides out short lock waits instead of
            # failing at once; IMMEDIATE takes the write lock at BEGIN, so two writers
            # never deadlock upgrading a read lock.
            pragmas={"journal_mode": "wal", "busy_timeout": 10000, "synchronous": "normal"},
            timeout=10,
            lock_type="IMMEDIATE",
        )
    if scheme.startswith("postgres"):
        name = params.pop("database")
        params.setdefault("options", "-c timezone=UTC")
        params.setdefault("connect_timeout", 10)
        return ReconnectingPostgres(name, **params)
    if scheme.startswith("mysql"):
        name = params.pop("database")
        params.setdefault("init_command", "SET time_zone = '+00:00'")
        params.setdefault("charset", "utf8mb4")
        params.setdefault("connect_timeout", 10)
        return ReconnectingMySQL(name, **params)
    raise ValueError(f"database: unsupported URL scheme {scheme!r} "
                     "(use sqlite, postgresql or mysql)")


def bind(db: Database) -> Database:
    """Point the models at `db` (one database per process)."""
    database.initialize(db)
    return db


def connect(url: str) -> Database:
    return bind(open_database(url))


def ddl_text(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r} (use {', '.join(DIALECTS)})")
    return (DDL_DIR / f"{dialect}.sql").read_text(encoding="utf-8")


def split_statements(sql: str) -> list[str]:
    """Split a DDL script on ';' outside quotes, comments and $$ bodies."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("$$", i):
            j = sql.find("$$", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
            continue
        c = sql[i]
        if c == "'":
            m = re.compile(r"'(?:[^']|'')*'").match(sql, i)
            j = m.end() if m else n
            buf.append(sql[i:j])
            i = j
            continue
        if c == ";":
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
        else:
            buf.append(c)
        i += 1
    stmt = "".join(buf).strip()
    if stmt:
        statements.append(stmt)
    return statements


_CREATE_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s+ON\s+(\w+)", re.I)


INIT_LOCK_KEY = 0x4845_5241_4C44  # "HERALD": the advisory lock of init_schema


def init_schema(db: Database) -> None:
    """Create msg_list and access_token (and on PostgreSQL the NOTIFY trigger).

    Idempotent: the DDL files use IF NOT EXISTS / OR REPLACE, and a CREATE INDEX
    without IF NOT EXISTS (MySQL has none) is skipped when the index is there.
    """
    dialect = dialect_of(db)
    with db.connection_context():
        # PostgreSQL DDL is transactional: all of init-db happens or none, and no
        # insert runs between dropping and re-creating the trigger.
        with db.atomic() if dialect == "postgres" else nullcontext():
            if dialect == "postgres":
                # Two init-db at once (daemons on several hosts starting together)
                # would race in CREATE TABLE IF NOT EXISTS and one would fail on
                # pg_type's unique index: take turns instead.
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK_KEY,))
            for stmt in split_statements(ddl_text(dialect)):
                m = _CREATE_INDEX.match(stmt)
                if m and not m.group(1):
                    index, table = m.group(2), m.group(3)
                    if index in {i.name for i in db.get_indexes(table)}:
                        continue
                db.execute_sql(stmt)


__all__ = ["AccessToken", "MsgList", "bind", "connect", "ddl_text", "dialect_of",
           "init_schema", "open_database", "split_statements", "url_params"]
