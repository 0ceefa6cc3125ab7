"""What every verb shares: exit codes, messages, loading the config, opening the queue.

Output for people: short lines on stdout, problems on stderr, never a secret (every
message goes through logs.redact) and never a traceback for a failure an operator
can meet (a missing database, a wrong id, a typo).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta

from peewee import Database

import clock
from config import Config, ConfigError, load_config, parse_duration
from config.model import mask_url
from db.connection import connect
from db.errors import describe as describe_db_error
from db.schema import SchemaState, state
from db.urls import database_file
from logs import config_secrets, redact, set_secrets

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class VerbError(Exception):
    """An expected failure: its message is the whole story, shown without a traceback."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


def actor() -> str:
    """Who runs this verb, for the records it leaves: cli:<the OS user>."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no name for this uid (a container): the uid
        import os

        user = f"uid {os.getuid()}"
    return f"cli:{user}"


def err(msg: str) -> None:
    print(redact(msg), file=sys.stderr)


def out(msg: str = "") -> None:
    print(redact(msg))


def safe_url(url: str) -> str:
    """A database URL fit for output: any password masked."""
    return mask_url(url)


def load(args: argparse.Namespace, *, credentials: bool = True) -> Config:
    """The config; credentials=False for verbs that only touch the database, which then
    run without the apps' secrets in the environment (DESIGN.md, operator verbs)."""
    cfg = load_config(getattr(args, "config", None), strict_secrets=credentials)
    # whatever this verb prints is masked against the secrets the file holds (text a
    # remote echoed, stored by an older release or another program, included)
    set_secrets("config", config_secrets(cfg))
    return cfg


def open_queue(cfg: Config, *, need_schema: bool = True, current: bool = False) -> Database:
    """Connect to the configured database and make sure Herald's tables are there.

    A missing SQLite file is not created here (connecting would leave an empty file
    behind): the verbs that read the queue say what to do instead. VerbError with a
    sentence naming the database for everything an operator can meet. current=True:
    the schema must be this release's (verbs that write the history table).
    """
    where = safe_url(cfg.database)
    file = database_file(cfg.database)
    if need_schema and file is not None and not file.exists():
        raise VerbError(f"database {where}: the file {file} does not exist (run `init-db`, "
                        "or start the daemon: it creates the tables)")
    db = connect(cfg.database)
    try:
        db.connect(reuse_if_open=True)
    except Exception as exc:  # noqa: BLE001 - said in one sentence, not a traceback
        raise VerbError(describe_db_error(exc, cfg.database)) from None
    if need_schema:
        found = schema_state(db, cfg.database)
        if found.version is None or (current and not found.up_to_date):
            raise VerbError(f"database {where}: {found.describe()}")
    return db


def schema_state(db: Database, url: str) -> SchemaState:
    try:
        return state(db)
    except Exception as exc:  # noqa: BLE001
        raise VerbError(describe_db_error(exc, url)) from None




def parse_when(text: str | None, name: str, *, past: bool = False) -> datetime | None:
    """A time given on the command line: ISO 8601 (UTC when it has no offset), or a
    duration relative to now: '+90s' ahead, or with past=True '2h' meaning 2 h ago."""
    if text is None:
        return None
    text = text.strip()
    try:
        if text.startswith("+"):
            return clock.now() + timedelta(seconds=parse_duration(text[1:], name))
        if past and text[:1].isdigit() and not _looks_like_date(text):
            return clock.now() - timedelta(seconds=parse_duration(text, name))
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, ConfigError):
        forms = "ISO 8601 such as 2026-11-28T10:30 (UTC) or 2026-11-28T18:30+08:00"
        forms += ", or a duration ago such as 2h, 1d" if past else ", or +90s, +5m, +1h"
        raise VerbError(f"{name}: {text!r} is not a time ({forms})", EXIT_USAGE) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=clock.now().tzinfo)
    return dt


def _looks_like_date(text: str) -> bool:
    return len(text) >= 8 and text[4:5] == "-"


__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "VerbError", "err", "load", "open_queue",
           "out", "parse_when", "safe_url", "schema_state", "database_file"]
