"""The console's read-only queries, undecoded: every SQL statement the console runs.

The pages (web/console/) decode each value on its own (a row another program wrote
badly shows as text, never raises) and lay them out; what is asked of the database,
and through which index, is here. Statements are written with ? marks and run through
the database's Dialect, which also supplies what differs per engine (the minute of a
timestamp, a filter no index should serve).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import Database

from db.dialects import dialect

LIST_COLUMNS = ("id", "app", "template", "openid", "status", "attempts", "errcode", "error",
                "created_at", "send_at", "sent_at", "receipt", "parent_id")
HOP_COLUMNS = "id, status, template, errcode, parent_id"


def _rows(db: Database, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run `sql` (written with ? marks) and fetch every row."""
    return list(db.execute_sql(dialect(db).marks(sql), tuple(params)).fetchall())


def _ts(db: Database, value: datetime) -> object:
    return dialect(db).ts(value)


# ----------------------------------------------------------------- the overview


def status_totals(db: Database) -> list[tuple]:
    """(status, rows): the status index, an index-only count."""
    return _rows(db, "SELECT status, COUNT(*) FROM msg_list GROUP BY status")


def grid(db: Database, statuses: Sequence[str], limit: int) -> list[tuple]:
    """(app, template, rows per status..., rows) for the biggest `limit` groups: one
    pass over the table."""
    cases = ", ".join(f"SUM(CASE WHEN status = '{s}' THEN 1 ELSE 0 END)" for s in statuses)
    return _rows(db, f"SELECT app, template, {cases}, COUNT(*) FROM msg_list "
                     f"GROUP BY app, template ORDER BY COUNT(*) DESC LIMIT {int(limit)}")


def failures_by_errcode(db: Database, limit: int) -> list[tuple]:
    """(errcode, rows) of failed rows, the most frequent first (the status index)."""
    return _rows(db, "SELECT errcode, COUNT(*) FROM msg_list WHERE status = 'fail' "
                     f"GROUP BY errcode ORDER BY COUNT(*) DESC LIMIT {int(limit)}")


def sent_per_minute(db: Database, start: datetime) -> list[tuple]:
    """('YYYY-MM-DD HH:MM', receipt, rows) sent since `start` (the sent_at index)."""
    return _rows(db, f"SELECT {dialect(db).minute('sent_at')}, receipt, COUNT(*) FROM "
                     "msg_list WHERE sent_at >= ? GROUP BY 1, 2", (_ts(db, start),))


def without_receipt(db: Database, start: datetime, before: datetime | None = None) -> object:
    """How many rows sent since `start` (and before `before`) have no receipt: the
    raw count."""
    if before is None:
        (n,), = _rows(db, "SELECT COUNT(*) FROM msg_list WHERE sent_at >= ? "
                          "AND receipt IS NULL", (_ts(db, start),))
        return n
    found = _rows(db, "SELECT COUNT(*) FROM msg_list WHERE sent_at >= ? AND sent_at < ? "
                      "AND receipt IS NULL", (_ts(db, start), _ts(db, before)))
    return found[0][0]


def oldest_due(db: Database, now: datetime) -> list[tuple]:
    """(send_at,) of the oldest due waiting row, if any (the waiting rows' index)."""
    return _rows(db, "SELECT send_at FROM msg_list WHERE status = 'wait' AND send_at <= ? "
                     "ORDER BY send_at LIMIT 1", (_ts(db, now),))


def due(db: Database, now: datetime) -> object:
    """How many waiting rows are due: the raw count."""
    (n,), = _rows(db, "SELECT COUNT(*) FROM msg_list WHERE status = 'wait' "
                      "AND send_at <= ?", (_ts(db, now),))
    return n


# ----------------------------------------------------------------- the other pages


def failure_groups(db: Database, limit: int) -> list[tuple]:
    """(errcode, template, rows, last updated_at, an error) per failure group."""
    return _rows(db, "SELECT errcode, template, COUNT(*), MAX(updated_at), MAX(error) "
                     "FROM msg_list WHERE status = 'fail' GROUP BY errcode, template "
                     f"ORDER BY COUNT(*) DESC LIMIT {int(limit)}")


def failed_without_errcode(db: Database, template: str | None, limit: int) -> list[tuple]:
    """(id,) of failed rows of one template (None: none) that have no errcode."""
    if template is None:
        return _rows(db, "SELECT id FROM msg_list WHERE status = 'fail' AND errcode IS NULL"
                         f" AND template IS NULL ORDER BY id LIMIT {int(limit)}")
    return _rows(db, "SELECT id FROM msg_list WHERE status = 'fail' AND errcode IS NULL"
                     f" AND template = ? ORDER BY id LIMIT {int(limit)}", (template,))


def grants(db: Database, openid: str, apps: Sequence[str], limit: int) -> list[tuple]:
    """(app, template_id, balance, status, updated_at) of one user's ledger. The key is
    (app, openid, template_id): naming the apps makes this a key lookup per app."""
    marks = ", ".join("?" * len(apps))
    return _rows(db, "SELECT app, template_id, balance, status, updated_at FROM "
                     f"subscribe_grant WHERE app IN ({marks}) AND openid = ? "
                     f"ORDER BY app, template_id LIMIT {int(limit)}", [*apps, openid])


def token_states(db: Database) -> list[tuple]:
    """(app, expires_at, refreshed_at, refreshed_by): never the token, which is not
    even selected."""
    return _rows(db, "SELECT app, expires_at, refreshed_at, refreshed_by FROM access_token "
                     "ORDER BY app LIMIT 100")


def daemons(db: Database) -> list[tuple]:
    """Every heartbeat row, undecoded (db/heartbeat.seen decodes them all at once)."""
    return _rows(db, "SELECT daemon_id, role, host, pid, version, started_at, "
                     "last_seen, last_dispatch, info FROM herald_daemon")


# ----------------------------------------------------------------- finding messages


@dataclass(frozen=True)
class Search:
    """What the message list asks for (None: not filtered)."""

    q: str | None = None  # dedup_key or msgid
    q_id: int | None = None  # q read as an id, when it is one
    status: str | None = None
    template: str | None = None
    app: str | None = None
    openid: str | None = None


@dataclass(frozen=True)
class Found:
    rows: list[tuple]  # LIST_COLUMNS, newest first
    plan: str  # which index answered
    window: tuple[int, int] | None = None  # ids [low, high) searched, in window plans
    more_below: bool = False  # the window did not reach the lowest id


def search(db: Database, s: Search, before: int | None, *, page: int, window: int,
           few_max: int) -> Found:
    """One page of the message list (page + 1 rows, to tell whether more follow; a q
    search `page` rows), through a plan one index answers (web/console/messages.py).

    Filters that are not the plan's own are checked row by row (Dialect.unindexed), so
    SQLite never trades the plan's index for a worse one.
    """
    if s.q:
        where = ["(dedup_key = ? OR msgid = ?" + (" OR id = ?)" if s.q_id is not None else ")")]
        params: list[Any] = [s.q, s.q, *([s.q_id] if s.q_id is not None else [])]
        more, more_params = _residual(db, s, set())
        return Found(_select(db, where + more, params + more_params, page), "dedup_key/msgid")
    for plan, leading, value in (("openid", "openid = ?", s.openid),
                                 ("status", "status = ?", s.status)):
        if value is None or (plan == "status" and not _few(db, value, few_max)):
            continue
        where, params = [leading], [value]
        if before is not None:
            where.append("id < ?")
            params.append(before)
        more, more_params = _residual(db, s, {plan})
        return Found(_select(db, where + more, params + more_params, page + 1), plan)
    if not any((s.status, s.template, s.app, s.openid)):
        where, params = ([], []) if before is None else (["id < ?"], [before])
        return Found(_select(db, where, params, page + 1), "id")
    bounds = _id_bounds(db)
    if bounds is None:
        return Found([], "window")
    high = min(before, bounds[1] + 1) if before is not None else bounds[1] + 1
    low = max(high - window, bounds[0])
    more, more_params = _residual(db, s, set())
    found = _select(db, ["id >= ?", "id < ?", *more], [low, high, *more_params], page + 1)
    return Found(found, "window", (low, high), more_below=low > bounds[0])


def _residual(db: Database, s: Search, skip: set[str]) -> tuple[list[str], list[Any]]:
    """The filters the plan does not answer itself, checked row by row."""
    d = dialect(db)
    conds: list[str] = []
    params: list[Any] = []
    for name in ("status", "template", "openid"):
        value = getattr(s, name)
        if value is not None and name not in skip:
            conds.append(f"{d.unindexed(name)} = ?")
            params.append(value)
    if s.app is not None and "app" not in skip:
        if s.app == "default":  # rows with app NULL use the default app (as db/ops)
            conds.append(f"({d.unindexed('app')} = ? OR app IS NULL)")
        else:
            conds.append(f"{d.unindexed('app')} = ?")
        params.append(s.app)
    return conds, params


def _select(db: Database, where: list[str], params: list[Any], limit: int) -> list[tuple]:
    clause = " AND ".join(where) if where else "1 = 1"
    return _rows(db, f"SELECT {', '.join(LIST_COLUMNS)} FROM msg_list WHERE {clause} "
                     f"ORDER BY id DESC LIMIT {int(limit)}", params)


def _id_bounds(db: Database) -> tuple[int, int] | None:
    # two subqueries: SQLite answers MIN and MAX from the key only one at a time
    (low, high), = _rows(db, "SELECT (SELECT MIN(id) FROM msg_list), "
                             "(SELECT MAX(id) FROM msg_list)")
    if low is None or high is None:
        return None
    return int(low), int(high)


def _few(db: Database, status: str, few_max: int) -> bool:
    """Whether `status` has at most `few_max` rows: a count that stops there, so it
    reads at most that many index entries however many rows the status has."""
    (n,), = _rows(db, "SELECT COUNT(*) FROM (SELECT 1 AS one FROM msg_list WHERE "
                      f"status = ? LIMIT {int(few_max) + 1}) AS capped", (status,))
    return int(n) <= few_max


# ----------------------------------------------------------------- one message


def message(db: Database, row_id: int, columns: Sequence[str]) -> list[tuple]:
    """The row's `columns` (msg_list column names the caller lists), if it exists."""
    return _rows(db, f"SELECT {', '.join(columns)} FROM msg_list WHERE id = ?", (row_id,))


def events(db: Database, row_id: int, limit: int) -> list[tuple]:
    """(id, at, kind, channel, errcode, detail, daemon) of the row's history."""
    return _rows(db, "SELECT id, at, kind, channel, errcode, detail, daemon FROM msg_event "
                     f"WHERE msg_id = ? ORDER BY id LIMIT {int(limit)}", (row_id,))


def hop(db: Database, row_id: int) -> list[tuple]:
    """(HOP_COLUMNS) of one row of a fallback chain, if it exists."""
    return _rows(db, f"SELECT {HOP_COLUMNS} FROM msg_list WHERE id = ?", (row_id,))


def hops_from(db: Database, parents: Sequence[int], limit: int) -> list[tuple]:
    """(HOP_COLUMNS) of the rows made from `parents` (their fallback hops)."""
    marks = ", ".join("?" * len(parents))
    return _rows(db, f"SELECT {HOP_COLUMNS} FROM msg_list WHERE parent_id IN ({marks}) "
                     f"ORDER BY id LIMIT {int(limit)}", list(parents))


__all__ = ["HOP_COLUMNS", "LIST_COLUMNS", "Found", "Search", "daemons", "due", "events",
           "failed_without_errcode", "failure_groups", "failures_by_errcode", "grants",
           "grid", "hop", "hops_from", "message", "oldest_due", "search", "sent_per_minute",
           "status_totals", "token_states", "without_receipt"]
