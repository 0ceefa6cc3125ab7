"""Open the queue database from a URL and bind the models to it.

One URL names the engine: sqlite:///path (embedded default), postgresql://...,
mysql://... (each server scheme may add +pool). The session of every connection runs
in UTC, so timestamps written by Herald and by server defaults agree whatever the
host's zone. What differs per engine lives in db/dialects.py; the schema and its
upgrades in db/schema.py.
"""

from __future__ import annotations

from peewee import Database

from db.dialects import NAMES as DIALECTS
from db.dialects import dialect, for_url, url_params
from db.models import AccessToken, MsgList, database
from db.schema import ddl_text, init_schema, split_statements


def dialect_of(db: Database) -> str:
    """The engine's name: sqlite, postgres or mysql."""
    return dialect(db).name


def open_database(url: str) -> Database:
    """A peewee Database for `url`, not yet connected (connections open lazily)."""
    return for_url(url).open(url)


def bind(db: Database) -> Database:
    """Point the models at `db` (one database per process)."""
    database.initialize(db)
    return db


def connect(url: str) -> Database:
    return bind(open_database(url))


__all__ = ["DIALECTS", "AccessToken", "MsgList", "bind", "connect", "ddl_text", "dialect_of",
           "init_schema", "open_database", "split_statements", "url_params"]
