"""The few SQL shapes that differ per engine, for the console's read-only queries."""

from __future__ import annotations

from typing import Any

from peewee import Database

from db.dialects import dialect


def rows(db: Database, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple]:
    """Run `sql` (written with ? marks) and fetch every row."""
    return list(db.execute_sql(marks(db, sql), tuple(params)).fetchall())


def marks(db: Database, sql: str) -> str:
    """'?' placeholders -> the driver's (pymysql and psycopg2 use %s, and then need a
    literal % doubled)."""
    p = dialect(db).param
    if p == "?":
        return sql
    return sql.replace("%", "%%").replace("?", p)


def minute(db: Database, column: str) -> str:
    """`column` truncated to its minute, as text 'YYYY-MM-DD HH:MM' (UTC)."""
    name = dialect(db).name
    if name == "postgres":
        return f"to_char(date_trunc('minute', {column}), 'YYYY-MM-DD HH24:MI')"
    if name == "mysql":
        return f"DATE_FORMAT({column}, '%Y-%m-%d %H:%i')"
    return f"substr({column}, 1, 16)"  # SQLite keeps Herald's UTC text form


def unindexed(db: Database, column: str) -> str:
    """`column` written so that SQLite does not pick an index on it: a filter that is
    checked row by row inside an id range, where the range is the cheap part. (SQLite
    has no statistics unless someone runs ANALYZE, and then prefers any index with an
    equality; PostgreSQL and MySQL plan from their statistics.)"""
    return f"+{column}" if dialect(db).name == "sqlite" else column


def ts(db: Database, value: Any) -> Any:
    return dialect(db).ts(value)


__all__ = ["marks", "minute", "rows", "ts", "unindexed"]
