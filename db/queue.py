"""Read-only summaries of the queue, shared by `status`, /metrics and systemd's STATUS=.

Every query here answers from an index on a table of millions of finished rows: the
open rows (wait, sending) through the claim/status indexes, failures through the
status index, never a scan of the whole table per call. Values are decoded one by
one (db/decode.py) so a row another program wrote badly shows as text, never raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from peewee import SQL, Case, Database, Expression, fn

from db.decode import text_or_shown, ts_or_none
from db.models import STATUSES, MsgList, PushEvent

# How a waiting row's error says why it waits (policy.py, jobs/dispatch.py, db/grants.py)
# (templates/spending_decide.py's holds first: they start with "held:" too)
HELD_PREFIXES = (("deferred", "quota"), ("no access token", "token"),
                 ("held: send window", "window"), ("held: collapse window", "collapse"),
                 ("held: capped", "cap"), ("held:", "grant"))
WAIT_STATES = ("due", "scheduled", "retrying", "held_quota", "held_token", "held_grant",
               "held_window", "held_collapse", "held_cap")
OPEN_STATES = (*WAIT_STATES, "sending", "stale")


def counts_by_status(db: Database, statuses: Iterable[str] = STATUSES) -> dict[str, int]:
    """Rows per status, every asked-for status present (0 when none)."""
    wanted = tuple(statuses)
    query = MsgList.select(MsgList.status, fn.COUNT(MsgList.id)).group_by(MsgList.status)
    if wanted != STATUSES:
        query = query.where(MsgList.status.in_(wanted))
    counts = dict.fromkeys(wanted, 0)
    rows: list[tuple[str, int]] = list(query.tuples().execute(db))  # type: ignore[arg-type]
    counts.update((s, n) for s, n in rows if s in counts)
    return counts


def oldest_due(db: Database, now: datetime) -> tuple[int, datetime] | None:
    """(id, send_at) of the oldest waiting row that is due (scheduled rows are not
    backlog). ORDER BY send_at LIMIT walks the (status, send_at) index; a send_at that
    cannot be read as a time (text another program wrote) is passed over, not raised."""
    query = (MsgList.select(MsgList.id, MsgList.send_at)
             .where((MsgList.status == "wait") & (MsgList.send_at <= now))
             .order_by(MsgList.send_at).limit(5))
    for rid, send_at in db.execute(query).fetchall():
        when = ts_or_none(send_at)
        if when is not None:
            return int(rid), when
    return None


def oldest_due_wait(db: Database, now: datetime) -> datetime | None:
    """send_at of the oldest due waiting row (see oldest_due)."""
    found = oldest_due(db, now)
    return found[1] if found else None


def due_count(db: Database, now: datetime, cap: int = 100_000) -> int:
    """Due waiting rows, counted up to `cap` (a progress line's "left": an index range
    that stops at the cap however deep the backlog)."""
    inner = (MsgList.select(MsgList.id)
             .where((MsgList.status == "wait") & (MsgList.send_at <= now)).limit(cap))
    return int(MsgList.select(fn.COUNT(SQL("*"))).from_(inner.alias("due")).scalar(db) or 0)


def open_state(now: datetime) -> Case:
    """What an open row is doing: due, scheduled, retrying, held_*, sending or stale."""
    cases = [
        ((MsgList.status == "sending") & (MsgList.lease_until < now), "stale"),
        (MsgList.status == "sending", "sending"),
        (MsgList.send_at <= now, "due"),
        (MsgList.error.is_null(), "scheduled"),
        *(((MsgList.error.startswith(prefix)), f"held_{name}")
          for prefix, name in HELD_PREFIXES),
    ]
    # any other reason a row waits for a later time is a retry (back-off, 43108,
    # recovered after a crash)
    return Case(None, cases, "retrying")


@dataclass(frozen=True)
class OpenCount:
    app: str | None
    template: str
    state: str
    rows: int


def open_rows(db: Database, now: datetime) -> list[OpenCount]:
    """Open rows (wait, sending) per app, template and state."""
    state = open_state(now)
    query = (MsgList.select(MsgList.app, MsgList.template, state, fn.COUNT(MsgList.id))
             .where(MsgList.status.in_(["wait", "sending"]))
             # by position: PostgreSQL cannot tell that a CASE with parameters in the
             # GROUP BY is the one in the SELECT list
             .group_by(SQL("1"), SQL("2"), SQL("3")))
    out = []
    for app, template, st, n in db.execute(query).fetchall():
        out.append(OpenCount(text_or_shown(app), text_or_shown(template) or "",
                             str(st), int(n)))
    return out


def failed_since(db: Database, since: datetime) -> list[tuple[str | None, str, int]]:
    """(app, template, rows) failed since `since` (the status index's updated_at)."""
    query = (MsgList.select(MsgList.app, MsgList.template, fn.COUNT(MsgList.id))
             .where((MsgList.status == "fail") & (MsgList.updated_at >= since))
             .group_by(MsgList.app, MsgList.template))
    return [(text_or_shown(app), text_or_shown(template) or "", int(n))
            for app, template, n in db.execute(query).fetchall()]


@dataclass(frozen=True)
class Failure:
    id: int
    app: str | None
    template: str
    errcode: int | None
    error: str | None
    updated_at: datetime | None


def recent_failures(db: Database, limit: int) -> list[Failure]:
    """The last `limit` failed rows, newest first."""
    query = (MsgList.select(MsgList.id, MsgList.app, MsgList.template, MsgList.errcode,
                            MsgList.error, MsgList.updated_at)
             .where(MsgList.status == "fail")
             .order_by(MsgList.updated_at.desc(), MsgList.id.desc()).limit(limit))
    out = []
    for rid, app, template, errcode, error, updated in db.execute(query).fetchall():
        code = errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else None
        out.append(Failure(int(rid), text_or_shown(app), text_or_shown(template) or "",
                           code, text_or_shown(error), ts_or_none(updated)))
    return out


__all__ = ["HELD_PREFIXES", "OPEN_STATES", "WAIT_STATES", "Failure", "OpenCount",
           "counts_by_status", "due_count", "failed_since", "oldest_due_wait", "open_rows",
           "open_state", "recent_failures"]


RECEIPT_WINDOW_HOURS = 24


@dataclass(frozen=True)
class Receipts:
    """What became of the rows sent since a moment (sent_at is set on every delivery)."""

    delivered: int = 0
    failed: int = 0
    missing: int = 0  # no receipt although sent longer ago than receipts.missing_after
    awaiting: int = 0  # no receipt yet, sent more recently


def receipts_since(db: Database, since: datetime, missing_before: datetime) -> Receipts:
    """Receipt states of rows sent after `since` (the msg_list_sent index range)."""
    # a peewee Expression at run time; without the annotation mypy reads `<` as
    # datetime's reflected comparison and infers bool
    d_missing: Expression = MsgList.sent_at < missing_before
    query = (MsgList.select(MsgList.receipt, d_missing.alias("old"), fn.COUNT(SQL("*")))
             .where(MsgList.sent_at >= since)
             .group_by(MsgList.receipt, d_missing).tuples().execute(db))
    out = {"delivered": 0, "failed": 0, "missing": 0, "awaiting": 0}
    for receipt, old, n in query:
        if receipt in ("delivered", "failed"):
            out[str(receipt)] += int(n)
        elif receipt is None:
            out["missing" if old else "awaiting"] += int(n)
    return Receipts(**out)


def held_for_grant(db: Database) -> tuple[int, int]:
    """(rows, users) waiting for a grant under grants.on_missing: hold."""
    held = (MsgList.status == "wait") & MsgList.error.startswith("held: no grant")
    row = (MsgList.select(fn.COUNT(SQL("*")), fn.COUNT(MsgList.openid.distinct()))
           .where(held).tuples().first(db))
    return (int(row[0]), int(row[1])) if row else (0, 0)


def pending_events(db: Database) -> int:
    """push_event rows not applied yet (receipts waiting for their row, or a backlog)."""
    return int(PushEvent.select(fn.COUNT(SQL("*"))).where(PushEvent.applied_at.is_null())
               .scalar(db) or 0)
