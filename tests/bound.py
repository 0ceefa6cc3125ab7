"""Test-only: the peewee models pointed at a test's database.

Herald's own code binds the models to nothing and runs every statement on the
database it is handed (db/models.py); the tests (and the benchmarks) read and write
rows through the models for brevity, so they bind them to the database under test.
tests/test_seams.py runs the storage functions with the models bound to nothing, so
a statement that leans on this binding cannot hide behind it.
"""

from __future__ import annotations

from peewee import Database

from db.connection import open_database
from db.models import TABLES


def bind(db: Database) -> Database:
    """Point the models at `db` (the test's one database)."""
    db.bind(TABLES, bind_refs=False, bind_backrefs=False)
    return db


def unbind() -> None:
    """The models bound to nothing again, as in Herald itself."""
    for model in TABLES:
        model._meta.set_database(None)


def connect(url: str) -> Database:
    """Open `url` and bind the models to it."""
    return bind(open_database(url))


__all__ = ["bind", "connect", "unbind"]
