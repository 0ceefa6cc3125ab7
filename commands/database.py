"""`init-db` (create or upgrade the schema) and `schema` (print the reference DDL)."""

from __future__ import annotations

import argparse
import sys

from commands.common import EXIT_OK, VerbError, load, out, safe_url
from db.connection import connect, ddl_text, init_schema
from db.errors import describe
from db.schema import state


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(ddl_text(args.dialect))
    return EXIT_OK


def cmd_init_db(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    db = connect(cfg.database)
    try:
        db.connect(reuse_if_open=True)
    except Exception as exc:  # noqa: BLE001 - one sentence naming the database
        raise VerbError(describe(exc, cfg.database)) from None
    before = state(db).version
    applied = init_schema(db)
    db.close()
    if before is None:
        what = f"created, schema version {applied[-1]}"
    elif applied:
        what = f"upgraded from schema version {before} to {applied[-1]}"
    else:
        what = f"already current, schema version {before}"
    out(f"Herald's tables are ready in {safe_url(cfg.database)} ({what})")
    return EXIT_OK


__all__ = ["cmd_init_db", "cmd_schema"]
