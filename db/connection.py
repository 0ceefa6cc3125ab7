"""Open the queue database from a URL and create its schema.

One URL names the engine: sqlite:///path (embedded default), postgresql://...,
mysql://... The session of every connection runs in UTC, so timestamps written by
Herald and by server defaults agree whatever the host's zone.
"""

from __future__ import annotations

import re
from pathlib import Path

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


class ReconnectingPostgres(ReconnectMixin, PostgresqlDatabase):
    """Reconnects when the server dropped us (restart, pg_terminate_backend).

    ReconnectMixin only retries outside a transaction, so a dropped connection costs
    at most the statement or job run in progress, never the daemon.
    """

    reconnect_errors = ReconnectMixin.reconnect_errors + (
        (OperationalError, "server closed the connection"),
        (OperationalError, "terminating connection"),
        (OperationalError, "connection already closed"),
        (InterfaceError, "connection already closed"),
        (OperationalError, "could not receive data"),
        (OperationalError, "SSL connection has been closed"),
    )


class ReconnectingMySQL(ReconnectMixin, MySQLDatabase):
    """MySQL/MariaDB: ReconnectMixin's defaults cover 2006/2013/2014/4031."""


def dialect_of(db: Database) -> str:
    if isinstance(db, PostgresqlDatabase):
        return "postgres"
    if isinstance(db, MySQLDatabase):
        return "mysql"
    return "sqlite"


def open_database(url: str) -> Database:
    """A peewee Database for `url`, not yet connected (connections open lazily)."""
    scheme = url.split(":", 1)[0].lower()
    params = parse(url)
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
        return ReconnectingPostgres(name, autorollback=True, **params)
    if scheme.startswith("mysql"):
        name = params.pop("database")
        params.setdefault("init_command", "SET time_zone = '+00:00'")
        params.setdefault("charset", "utf8mb4")
        params.setdefault("connect_timeout", 10)
        return ReconnectingMySQL(name, autorollback=True, **params)
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


def init_schema(db: Database) -> None:
    """Create msg_list and access_token if they do not exist (idempotent)."""
    dialect = dialect_of(db)
    with db.connection_context():
        existing = set(db.get_tables())
        for stmt in split_statements(ddl_text(dialect)):
            # MySQL has no CREATE INDEX IF NOT EXISTS (MariaDB has); skip the
            # index statements when the table was already there.
            if dialect == "mysql" and stmt.upper().startswith("CREATE INDEX"):
                if MsgList._meta.table_name in existing:
                    continue
            db.execute_sql(stmt)


__all__ = ["AccessToken", "MsgList", "bind", "connect", "dialect_of", "init_schema",
           "open_database"]
