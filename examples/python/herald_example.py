#!/usr/bin/env python3
"""Queue one WeChat message with Herald and wait for its outcome.

Inserts a row into msg_list with plain SQL, then polls that row until Herald has sent
it (or failed it) and prints what Herald wrote. Copy the parts you need:

    DATABASE_URL=postgresql://app@127.0.0.1/herald python3 herald_example.py --openid oUser...

The URL is the one in Herald's config.yaml: sqlite:///relative.db, sqlite:////abs.db,
postgresql://user:password@host:5432/db or mysql://user:password@host:3306/db.
Drivers: sqlite3 (standard library), psycopg2, PyMySQL.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

SETTLED = ("success", "fail", "cancelled")  # wait and sending are not final


def connect(url: str) -> tuple[str, Any]:
    """(engine, DB-API connection) for a Herald database URL, in autocommit mode."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///herald.db is relative, sqlite:////var/lib/herald/herald.db absolute.
        # isolation_level=None: autocommit. timeout: Herald writes to the same file, so
        # wait for its lock instead of failing at once with "database is locked".
        return "sqlite", sqlite3.connect(parts.path[1:], timeout=10, isolation_level=None)
    if parts.scheme in ("postgresql", "postgres"):
        import psycopg2

        conn = psycopg2.connect(url)
        conn.autocommit = True  # no transaction left open while we poll
        return "postgres", conn
    if parts.scheme == "mysql":
        import pymysql

        return "mysql", pymysql.connect(
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username or ""), password=unquote(parts.password or ""),
            database=parts.path.lstrip("/"),
            charset="utf8mb4",  # Chinese text and emoji survive
            # TIMESTAMP columns convert from the session's zone: make it UTC.
            init_command="SET time_zone = '+00:00'",
            # PyMySQL's default is autocommit off: every poll would then read the one
            # snapshot of a REPEATABLE READ transaction and never see Herald's update.
            autocommit=True,
        )
    raise SystemExit(f"unsupported database URL scheme {parts.scheme!r}")


def insert(engine: str, conn: Any, row: dict[str, Any]) -> int:
    """INSERT the row; returns its id."""
    mark = "?" if engine == "sqlite" else "%s"  # each driver's placeholder
    names = ", ".join(row)
    sql = f"INSERT INTO msg_list ({names}) VALUES ({', '.join([mark] * len(row))})"
    cur = conn.cursor()
    if engine == "postgres":
        cur.execute(sql + " RETURNING id", list(row.values()))
        return int(cur.fetchone()[0])
    cur.execute(sql, list(row.values()))
    return int(cur.lastrowid)


def is_unique_violation(engine: str, exc: Exception) -> bool:
    if engine == "sqlite":
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_UNIQUE"
    if engine == "postgres":
        return getattr(exc, "pgcode", None) == "23505"
    return bool(exc.args) and exc.args[0] == 1062  # MySQL ER_DUP_ENTRY


def queue(engine: str, conn: Any, row: dict[str, Any]) -> tuple[int, bool]:
    """(id, inserted): a second insert with the same dedup_key is rejected by the
    database's UNIQUE constraint; that is the earlier row, so follow it instead."""
    try:
        return insert(engine, conn, row), True
    except Exception as exc:
        if not row.get("dedup_key") or not is_unique_violation(engine, exc):
            raise
    mark = "?" if engine == "sqlite" else "%s"
    cur = conn.cursor()
    cur.execute(f"SELECT id FROM msg_list WHERE dedup_key = {mark}", (row["dedup_key"],))
    found = cur.fetchone()
    if found is None:  # purged meanwhile: nothing to follow
        raise SystemExit(f"dedup_key {row['dedup_key']!r} was taken, and its row is gone")
    return int(found[0]), False


def outcome(engine: str, conn: Any, row_id: int) -> dict[str, Any]:
    mark = "?" if engine == "sqlite" else "%s"
    cur = conn.cursor()
    # msgid is text: WeChat's ids exceed 2**53, which a float (or a JavaScript number)
    # cannot hold exactly. Keep it a string end to end.
    cur.execute("SELECT status, errcode, error, msgid, receipt FROM msg_list "
                f"WHERE id = {mark}", (row_id,))
    found = cur.fetchone()
    if found is None:
        raise SystemExit(f"row {row_id} is gone (purged?)")
    return dict(zip(("status", "errcode", "error", "msgid", "receipt"), found, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description="Queue one WeChat message, wait for its outcome.")
    ap.add_argument("--database", default=os.environ.get("DATABASE_URL"),
                    help="database URL (default: $DATABASE_URL)")
    ap.add_argument("--template", default="order_status")
    ap.add_argument("--openid", default="oExampleOpenid0000000000000")
    ap.add_argument("--params", help="the params as a JSON array or object "
                    "(default: an order_status example built with json.dumps)")
    ap.add_argument("--dedup-key", help="at most one row per key, ever")
    ap.add_argument("--delay", type=float, default=0, help="send no sooner than this many "
                    "seconds from now (sets send_at, in UTC)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for the outcome")
    args = ap.parse_args()
    if not args.database:
        ap.error("give --database URL or set DATABASE_URL")

    # params is text holding JSON: build it with the JSON encoder, never by gluing
    # strings. Send display values as strings ("12.50", not 12.5) so they show as written.
    params = args.params or json.dumps(["拿铁 Latte", "12.50", "已发货", "谢谢惠顾"],
                                       ensure_ascii=False)
    row: dict[str, Any] = {"template": args.template, "openid": args.openid, "params": params}
    if args.dedup_key:
        row["dedup_key"] = args.dedup_key
    engine, conn = connect(args.database)
    if args.delay:
        # send_at is UTC, whatever this machine's or the session's zone.
        due = datetime.now(UTC) + timedelta(seconds=args.delay)
        # psycopg2 sends an aware datetime with its offset (timestamptz takes it);
        # SQLite and MySQL (in a UTC session) take UTC as 'YYYY-MM-DD HH:MM:SS'.
        row["send_at"] = due if engine == "postgres" else due.strftime("%Y-%m-%d %H:%M:%S")

    row_id, inserted = queue(engine, conn, row)
    if inserted:
        print(f"row: {row_id} (inserted)")
    else:
        print(f"row: {row_id} (dedup_key {args.dedup_key} was already queued)")

    deadline = time.monotonic() + args.timeout
    while True:
        out = outcome(engine, conn, row_id)
        if out["status"] in SETTLED or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    conn.close()
    for key in ("status", "errcode", "error", "msgid", "receipt"):
        value = out[key]
        print(f"{key}: {'NULL' if value is None else value}")
    # receipt stays NULL until WeChat reports delivery (only with the push set up)
    if out["status"] == "success":
        return 0
    if out["status"] in SETTLED:
        return 3
    print(f"row {row_id} still {out['status']} after {args.timeout:g} s", file=sys.stderr)
    return 4


if __name__ == "__main__":
    sys.exit(main())
