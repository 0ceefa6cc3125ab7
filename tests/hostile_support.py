"""Plumbing of the hostile-input tests: rows written the way another application writes
them (its own driver connection, autocommit, literal SQL where a driver parameter cannot
say it), rows read back without Herald's models, and the readers an operator uses.

No expectations live here: they are in the tests' tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2
import pymysql
from peewee import Database

from db.connection import url_params


@dataclass(frozen=True)
class Raw:
    """A column value written as literal SQL (per dialect), e.g. CAST(X'FF' AS TEXT)."""

    sql: Mapping[str, str]


class AppConnection:
    """Another program's connection to the queue database (autocommit).

    MySQL: `loose=True` inserts from a session with sql_mode = '' (what old PHP code and
    many hosting defaults run with), where the server stores a zero date for a value it
    cannot read and clips numbers instead of refusing them.
    """

    def __init__(self, dialect: str, url: str) -> None:
        self.dialect = dialect
        self.url = url
        self.param = "?" if dialect == "sqlite" else "%s"
        self.conn = self._open()
        self.loose_conn = self._open(loose=True) if dialect == "mysql" else None

    def _open(self, loose: bool = False) -> Any:
        params = url_params(self.url)
        name = params.pop("database")
        if self.dialect == "sqlite":
            return sqlite3.connect(name, isolation_level=None, timeout=10)
        if self.dialect == "postgres":
            conn = psycopg2.connect(dbname=name, **params)
            conn.autocommit = True
            return conn
        params["password"] = params.pop("passwd", params.get("password", ""))
        conn = pymysql.connect(database=name, autocommit=True, charset="utf8mb4", **params)
        if loose:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_mode = ''")
        return conn

    def close(self) -> None:
        self.conn.close()
        if self.loose_conn is not None:
            self.loose_conn.close()

    def execute(self, sql: str, params: tuple | list = (), *, loose: bool = False) -> Any:
        conn = self.loose_conn if loose and self.loose_conn is not None else self.conn
        cur = conn.cursor()
        cur.execute(sql, tuple(params))
        return cur

    def insert(self, cols: Mapping[str, Any], *, loose: bool = False) -> int:
        """INSERT INTO msg_list the given columns only; returns the new id."""
        names, marks, values = [], [], []
        for name, value in cols.items():
            names.append(name)
            if isinstance(value, Raw):
                marks.append(value.sql[self.dialect])
            else:
                marks.append(self.param)
                values.append(value)
        sql = f"INSERT INTO msg_list ({', '.join(names)}) VALUES ({', '.join(marks)})"
        if self.dialect == "postgres":
            cur = self.execute(sql + " RETURNING id", values)
            return int(cur.fetchone()[0])
        cur = self.execute(sql, values, loose=loose)
        if "id" in cols and not isinstance(cols["id"], Raw):
            return int(cols["id"])
        return int(cur.lastrowid)


@dataclass(frozen=True)
class Seen:
    """A row as the database holds it after the run, read without Herald's models."""

    status: str
    errcode: int | None
    error: str | None
    msgid: str | None
    attempts: int | None


def seen(db: Database, row_id: int) -> Seen:
    p = "?" if "sqlite" in type(db).__name__.lower() else "%s"
    r = db.execute_sql(f"SELECT status, errcode, error, msgid, attempts FROM msg_list "
                       f"WHERE id = {p}", (row_id,)).fetchone()
    assert r is not None, f"row {row_id} is gone"
    return Seen(str(r[0]), r[1], r[2], r[3], r[4])


def wipe(db: Database) -> None:
    """Empty the queue and its history (the schema and the token row stay)."""
    with db.atomic():
        db.execute_sql("DELETE FROM msg_list")
        db.execute_sql("DELETE FROM msg_event")


def claim_statements(db: Database, **claim: Any) -> list[tuple[str, Any]]:
    """The statements db.claim.claim_batch runs (sql, params), captured while it runs
    with `claim` (daemon_id, now, lease, limit): what an index test must EXPLAIN."""
    from db.claim import claim_batch

    captured: list[tuple[str, Any]] = []
    real = db.execute_sql

    def spy(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        captured.append((sql, params))
        return real(sql, params, *args, **kwargs)

    db.execute_sql = spy  # type: ignore[method-assign]
    try:
        claim_batch(db, **claim)
    finally:
        del db.execute_sql
    return captured


def explain(db: Database, sql: str, params: Any) -> str:
    """The plan of one statement, as text (SQLite: EXPLAIN QUERY PLAN; PostgreSQL:
    EXPLAIN, never ANALYZE, so nothing runs; MySQL: EXPLAIN's rows as key=value)."""
    name = type(db).__name__.lower()
    if "sqlite" in name:
        return " | ".join(str(r[-1]) for r in db.execute_sql("EXPLAIN QUERY PLAN " + sql,
                                                              params))
    cursor = db.execute_sql("EXPLAIN " + sql, params)
    if "postgres" in name:
        return "\n".join(r[0] for r in cursor.fetchall())
    cols = [d[0] for d in cursor.description]
    return "\n".join(", ".join(f"{c}={v}" for c, v in zip(cols, r, strict=True))
                     for r in cursor.fetchall())


__all__ = ["AppConnection", "Raw", "Seen", "claim_statements", "explain", "seen", "wipe"]
