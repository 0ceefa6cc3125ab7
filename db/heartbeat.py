"""Heartbeats: each running daemon (`run`) and web server (`serve`) keeps one row of
herald_daemon fresh, so `status` and the console can say which are alive, since when,
when each last dispatched, and what each one's token and configuration look like.

A row is written every HEARTBEAT_EVERY seconds and deleted on a clean stop; one not
seen for STALE_AFTER is shown as gone (a crash leaves its row behind), and purge
deletes rows not seen for a day.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peewee import Database

from db.dialects import dialect
from db.models import HeraldDaemon
from version import __version__

HEARTBEAT_EVERY = 15.0
STALE_AFTER = timedelta(seconds=90)
FORGET_AFTER = timedelta(days=1)


def beat(db: Database, *, daemon_id: str, role: str, started_at: datetime, now: datetime,
         last_dispatch: datetime | None = None, info: dict[str, Any] | None = None) -> None:
    """Insert or refresh this process's row."""
    d = dialect(db)
    values = {
        HeraldDaemon.role: role, HeraldDaemon.host: socket.gethostname()[:64],
        HeraldDaemon.pid: os.getpid(), HeraldDaemon.version: __version__,
        HeraldDaemon.started_at: started_at, HeraldDaemon.last_seen: now,
        HeraldDaemon.last_dispatch: last_dispatch,
        HeraldDaemon.info: json.dumps(info or {}, ensure_ascii=False, default=str),
    }
    with db.atomic():
        changed = (HeraldDaemon.update(values)
                   .where(HeraldDaemon.daemon_id == daemon_id).execute(db))
        if not changed:
            db.execute_sql(d.insert_ignore(
                "herald_daemon", ("daemon_id", "role", "host", "pid", "version", "started_at",
                                  "last_seen", "last_dispatch", "info"), "daemon_id"),
                (daemon_id, role, values[HeraldDaemon.host], values[HeraldDaemon.pid],
                 __version__, d.ts(started_at), d.ts(now),
                 d.ts(last_dispatch) if last_dispatch else None, values[HeraldDaemon.info]))


def stopped(db: Database, daemon_id: str) -> None:
    """A clean stop: the row goes (a crash leaves it, shown as not seen since)."""
    with db.atomic():
        HeraldDaemon.delete().where(HeraldDaemon.daemon_id == daemon_id).execute(db)


@dataclass(frozen=True)
class Seen:
    daemon_id: str
    role: str
    host: str
    pid: int
    version: str
    started_at: datetime | None
    last_seen: datetime | None
    last_dispatch: datetime | None
    info: dict[str, Any]
    alive: bool


def seen(db: Database, now: datetime) -> list[Seen]:
    """Every heartbeat row, newest first, with whether it is recent enough to be alive."""
    from db.decode import ts_or_none

    out = []
    cur = db.execute_sql("SELECT daemon_id, role, host, pid, version, started_at, last_seen, "
                         "last_dispatch, info FROM herald_daemon")
    for daemon_id, role, host, pid, version, started, last, dispatched, info in cur.fetchall():
        try:
            extra = json.loads(info) if info else {}
        except ValueError:
            extra = {}
        last_seen = ts_or_none(last)
        out.append(Seen(str(daemon_id), str(role), str(host), int(pid or 0), str(version),
                        ts_or_none(started), last_seen, ts_or_none(dispatched),
                        extra if isinstance(extra, dict) else {},
                        alive=last_seen is not None and now - last_seen <= STALE_AFTER))
    out.sort(key=lambda s: s.last_seen or datetime.min.replace(tzinfo=now.tzinfo), reverse=True)
    return out


def forget_old(db: Database, now: datetime) -> int:
    with db.atomic():
        return int(HeraldDaemon.delete()
                   .where(HeraldDaemon.last_seen < now - FORGET_AFTER).execute(db))


__all__ = ["FORGET_AFTER", "HEARTBEAT_EVERY", "STALE_AFTER", "Seen", "beat", "forget_old",
           "seen", "stopped"]
