"""Open the queue database from a URL.

One URL names the engine: sqlite:///path (embedded default), postgresql://...,
mysql://... (each server scheme may add +pool). The session of every connection runs
in UTC, so timestamps written by Herald and by server defaults agree whatever the
host's zone. What differs per engine lives in db/dialects.py (its drivers in
db/drivers.py); the schema and its upgrades in db/schema.py.

The database opened here is the one handle on storage: it is passed explicitly (the
Runtime holds it) to every function that reads or writes, and the peewee models are
bound to none (db/models.py).
"""

from __future__ import annotations

from peewee import Database

from db.dialects import NAMES as DIALECTS
from db.dialects import dialect, for_url
from db.schema import ddl_text, init_schema, split_statements
from db.urls import url_params


def dialect_of(db: Database) -> str:
    """The engine's name: sqlite, postgres or mysql."""
    return dialect(db).name


def open_database(url: str) -> Database:
    """A peewee Database for `url`, not yet connected (connections open lazily)."""
    return for_url(url).open(url)


def connect(url: str) -> Database:
    """The database a URL names (an alias of open_database: nothing is bound)."""
    return open_database(url)


__all__ = ["DIALECTS", "connect", "ddl_text", "dialect_of", "init_schema", "open_database",
           "split_statements", "url_params"]
