"""Spending grants in SQL: the newest-wins collapse inside the claim, the per-user cap
count, and the counts status, the console and the metrics show.

Collapse. Among waiting rows with the same app, openid and collapse_key only the newest
(highest id) is sent. The claim (db/claim.py) calls collapse() inside its own
transaction, and only when a claimed row has a collapse_key: a claimed row for which a
newer row with the same key exists (waiting, being sent, or already sent) ends
`cancelled` with `superseded by #<newest id>` and a history line, its attempt given
back, before the transaction commits: no other daemon or reader ever sees it claimed,
and it is never sent. The newer row may be claimed at the same moment by another
daemon (SKIP LOCKED): the older one is cancelled all the same, so of two rows with one
key at most the newest is sent, on any number of daemons. A row already `sending` is
never recalled: a newer row is sent after it. A row with NULL app and one with app
'default' are the same app.

A superseded row never falls back: it is cancelled here, never failed.

Caps (cap_count) count, for one app, openid and set of templates, the sends that
succeeded inside the cap's window and the rows other claims hold in `sending`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.decode import COLLAPSE_KEY_AT, shown, ts_or_none
from db.dialects import Dialect, dialect

SUPERSEDED = "superseded by #"
MAX_KEY = 128  # characters (spending.COLLAPSE_KEY_MAX; the DDL's CHECK says the same)
# the error prefixes of rows held by the pre-send decisions (templates/spending_decide.py)
HELD_WINDOW = "held: send window"
HELD_COLLAPSE = "held: collapse window"
HELD_CAP = "held: capped"
_APP = 3  # app, openid: places in a claimed row (db/decode.CLAIM_COLUMNS)
_OPENID = 4


@dataclass(frozen=True, slots=True)
class Collapsed:
    superseded: dict[int, int]  # claimed row id -> the newest row with its key
    created: dict[int, datetime | None]  # created_at of the kept rows with a key
    bad: dict[int, str]  # rows whose collapse_key cannot be used: why (they fail)


def collapse(db: Database, d: Dialect, raw: Sequence[Sequence[object]], *, stamp: object,
             daemon_id: str) -> Collapsed:
    """Cancel the claimed rows a newer row with the same key supersedes (inside the
    claim's transaction). `raw`: the claim's undecoded rows."""
    keyed: list[int] = []
    bad: dict[int, str] = {}
    for r in raw:
        key = r[COLLAPSE_KEY_AT]
        if key is None or key == "":  # an empty key is no key
            continue
        row_id = int(r[0])  # type: ignore[call-overload]
        if type(key) is not str or getattr(key, "raw", None) is not None:
            bad[row_id] = f"collapse_key {shown(key)} is not text"
        elif len(key) > MAX_KEY:
            bad[row_id] = f"collapse_key is longer than {MAX_KEY} characters ({shown(key)})"
        elif type(r[_OPENID]) is str and (r[_APP] is None or type(r[_APP]) is str):
            keyed.append(row_id)
    if not keyed:
        return Collapsed({}, {}, bad)
    p = d.param
    marks = ", ".join([p] * len(keyed))
    # one statement for the whole claim: each keyed row with the newest row of its key
    # (msg_list_collapse serves the join: collapse_key, openid, then id)
    cur = db.execute_sql(
        "SELECT c.id, c.created_at, MAX(n.id) FROM msg_list c LEFT JOIN msg_list n "
        "ON n.collapse_key = c.collapse_key AND n.openid = c.openid AND n.id > c.id "
        "AND n.status IN ('wait', 'sending', 'success') "
        "AND COALESCE(n.app, 'default') = COALESCE(c.app, 'default') "
        f"WHERE c.id IN ({marks}) GROUP BY c.id, c.created_at", keyed)
    superseded: dict[int, int] = {}
    created: dict[int, datetime | None] = {}
    for row_id, created_at, newest in cur.fetchall():
        if newest is not None:
            superseded[int(row_id)] = int(newest)
        else:
            created[int(row_id)] = ts_or_none(created_at)
    if superseded:
        cursor = db.cursor()
        values = [(row_id, f"{SUPERSEDED}{newest}") for row_id, newest in superseded.items()]
        # the claim's attempts+1 given back: the row was never claimed for anyone to see
        d.update_from_values(
            cursor, "msg_list", (("id", "bigint"), ("error", "text")), values,
            [("status", "'cancelled'"), ("error", "v.error"), ("errcode", "NULL"),
             ("attempts", "t.attempts - 1"), ("claimed_by", "NULL"),
             ("lease_until", "NULL"), ("updated_at", ":now")],
            "t.id = v.id AND t.status = 'sending' AND t.claimed_by = :daemon",
            {"now": stamp, "daemon": daemon_id})
        d.insert_many(cursor, "msg_event", ("msg_id", "at", "kind", "detail", "daemon"),
                      [(row_id, stamp, "superseded", error, daemon_id)
                       for row_id, error in values])
    return Collapsed(superseded, created, bad)


def newest_with_key(db: Database, row_id: int) -> tuple[int | None, datetime | None]:
    """(the newest row that supersedes this one or None, this row's created_at): what
    the claim would find (render and show explain a row with it; nothing changes)."""
    p = dialect(db).param
    cur = db.execute_sql(
        "SELECT MAX(n.id), c.created_at FROM msg_list c LEFT JOIN msg_list n "
        "ON n.collapse_key = c.collapse_key AND n.openid = c.openid AND n.id > c.id "
        "AND n.status IN ('wait', 'sending', 'success') "
        "AND COALESCE(n.app, 'default') = COALESCE(c.app, 'default') "
        f"WHERE c.id = {p} GROUP BY c.id, c.created_at", (row_id,))
    found = cur.fetchone()
    if found is None:
        return None, None
    return (None if found[0] is None else int(found[0])), ts_or_none(found[1])


@dataclass(frozen=True, slots=True)
class CapCount:
    sent: list[datetime]  # successful sends inside the window, oldest first
    in_flight: int  # rows other claims hold in sending


def cap_count(db: Database, *, app: str, openid: str, templates: Sequence[str],
              since: datetime, exclude: Sequence[int]) -> CapCount:
    """What counts against one user's cap: sends of `templates` to `openid` of `app`
    that succeeded after `since`, and rows being sent now (other than `exclude`, the
    rows this decision is about). One statement: a consistent view."""
    d = dialect(db)
    p = d.param
    names = ", ".join([p] * len(templates))
    skip = f" AND id NOT IN ({', '.join([p] * len(exclude))})" if exclude else ""
    app_is = ("(app IS NULL OR app = 'default')" if app == "default" else f"app = {p}")
    params: list[object] = [openid, *templates]
    if app != "default":
        params.append(app)
    params += [d.ts(since), *exclude]
    cur = db.execute_sql(
        f"SELECT status, sent_at FROM msg_list WHERE openid = {p} AND template IN ({names}) "
        f"AND {app_is} AND ((status = 'success' AND sent_at > {p}) OR status = 'sending')"
        f"{skip}", params)
    sent: list[datetime] = []
    flight = 0
    for status, sent_at in cur.fetchall():
        if status == "sending":
            flight += 1
        else:
            at = ts_or_none(sent_at)
            if at is not None:
                sent.append(at)
    sent.sort()
    return CapCount(sent, flight)


def counts(db: Database) -> dict[str, int]:
    """Rows superseded (kept until purge), and rows waiting for a send window, a
    collapse window or a cap: for status, the console and the metrics."""
    d = dialect(db)
    p = d.param
    cur = db.execute_sql(
        "SELECT "
        f"SUM(CASE WHEN status = 'cancelled' AND error LIKE {p} "
        "THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN status = 'wait' AND error LIKE {p} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN status = 'wait' AND error LIKE {p} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN status = 'wait' AND error LIKE {p} THEN 1 ELSE 0 END) "
        "FROM msg_list WHERE status IN ('cancelled', 'wait') AND error IS NOT NULL",
        (SUPERSEDED + "%", HELD_WINDOW + "%", HELD_COLLAPSE + "%",
         HELD_CAP + "%"))
    row = cur.fetchone() or (0, 0, 0, 0)
    names = ("superseded", "send_window", "collapse_window", "capped")
    return {n: int(v or 0) for n, v in zip(names, row, strict=True)}


__all__ = ["HELD_CAP", "HELD_COLLAPSE", "HELD_WINDOW", "SUPERSEDED", "CapCount", "Collapsed",
           "cap_count", "collapse", "counts", "newest_with_key"]
