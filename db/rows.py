"""Reading and writing msg_list rows for the verbs, the fallback chain and the guard on
template reloads: each statement runs on the database it is handed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from peewee import Database, fn

from db.decode import CLAIM_SELECT
from db.dialects import dialect
from db.models import MsgList, PushEvent, SubscribeGrant

Row = MsgList  # a row as every_row() returns it (attributes by column name)
Push = PushEvent

# what the `insert` verb may set (the rest are Herald's own or defaults)
INSERTABLE = ("template", "openid", "params", "priority", "send_at", "expire_at", "app",
              "page", "dedup_key", "phone", "collapse_key")


def max_length(column: str) -> int | None:
    """The longest text msg_list.<column> holds (None: no limit or not text)."""
    return getattr(getattr(MsgList, column), "max_length", None)


def insert(db: Database, values: Mapping[str, Any]) -> int:
    """One new row; its id. IntegrityError when its dedup_key is taken."""
    unknown = set(values) - set(INSERTABLE)
    if unknown:
        raise ValueError(f"not insertable: {', '.join(sorted(unknown))}")
    names = sorted(values)
    # each value as its column stores it (a time in UTC, as the driver takes it)
    stored = [getattr(MsgList, k).db_value(values[k]) for k in names]
    with db.atomic():
        return dialect(db).insert_id(db, "msg_list", names, stored)


def listing(db: Database, *, limit: int, status: str | None = None,
            template: str | None = None, app: str | None = None, openid: str | None = None,
            since: datetime | None = None, before_id: int | None = None) -> list[tuple]:
    """Rows newest first, undecoded: id, status, app, template, openid, attempts,
    send_at, created_at, error, msgid. app 'default' also matches rows with none."""
    cond = MsgList.id > 0
    if status:
        cond &= MsgList.status == status
    if template:
        cond &= MsgList.template == template
    if app:
        same = MsgList.app == app
        cond &= (same | MsgList.app.is_null()) if app == "default" else same
    if openid:
        cond &= MsgList.openid == openid
    if since is not None:
        cond &= MsgList.created_at >= since
    if before_id is not None:
        cond &= MsgList.id < before_id  # keyset paging: no OFFSET over millions
    query = (MsgList.select(MsgList.id, MsgList.status, MsgList.app, MsgList.template,
                            MsgList.openid, MsgList.attempts, MsgList.send_at,
                            MsgList.created_at, MsgList.error, MsgList.msgid)
             .where(cond).order_by(MsgList.id.desc()).limit(limit))
    return list(db.execute(query).fetchall())


def ancestors(db: Database, parent_id: int, hops: int = 10) -> list[str]:
    """Template names from the parent up to the root (at most `hops`)."""
    names: list[str] = []
    current: int | None = parent_id
    while current is not None and len(names) < hops:
        r = (MsgList.select(MsgList.template, MsgList.parent_id)
             .where(MsgList.id == current).tuples().first(db))
        if r is None:
            break
        names.append(str(r[0]))
        current = r[1]
    return names


def open_rows_naming(db: Database, names: Iterable[str]) -> dict[str, int]:
    """How many wait/sending rows name each of `names` (by name or template_id)."""
    wanted = list(names)
    if not wanted:
        return {}
    query = (MsgList.select(MsgList.template, fn.COUNT(MsgList.id))
             .where(MsgList.status.in_(["wait", "sending"]) & MsgList.template.in_(wanted))
             .group_by(MsgList.template))
    return {str(t): int(n) for t, n in query.tuples().execute(db)}


def every_row(db: Database) -> list[MsgList]:
    """Every row, oldest first (the demo's small queue: never a production table)."""
    return list(MsgList.select().order_by(MsgList.id).execute(db))


def every_grant(db: Database) -> list[SubscribeGrant]:
    """The grant ledger, by openid (the demo's)."""
    return list(SubscribeGrant.select().order_by(SubscribeGrant.openid).execute(db))


def every_push(db: Database) -> list[PushEvent]:
    """Every stored push (the demo's)."""
    return list(PushEvent.select().execute(db))


# ----------------------------------------------------------------- the verbs' reads
# Undecoded: the verbs decode each value on its own (db/decode.py), so one value
# another program wrote badly shows as text and never hides the rest.


def columns_of(db: Database, row_id: int) -> tuple[list[str], tuple] | None:
    """Every column of one row (SELECT *: what `show` prints), with their names."""
    cur = db.execute_sql(f"SELECT * FROM msg_list WHERE id = {dialect(db).param}", (row_id,))
    raw = cur.fetchone()
    if raw is None:
        return None
    return [c[0] for c in cur.description], tuple(raw)


def history(db: Database, row_id: int) -> list[tuple]:
    """(at, kind, channel, errcode, detail, daemon) of the row's history, oldest first."""
    return list(db.execute_sql(
        "SELECT at, kind, channel, errcode, detail, daemon FROM msg_event "
        f"WHERE msg_id = {dialect(db).param} ORDER BY id", (row_id,)).fetchall())


_LINK = "SELECT id, template, status, parent_id FROM msg_list WHERE "


def link(db: Database, row_id: int) -> tuple | None:
    """(id, template, status, parent_id) of one row of a fallback chain."""
    found = db.execute_sql(_LINK + f"id = {dialect(db).param}", (row_id,)).fetchone()
    return None if found is None else tuple(found)


def links_from(db: Database, parent_id: int) -> list[tuple]:
    """(id, template, status, parent_id) of the hops made from one row."""
    return list(db.execute_sql(_LINK + f"parent_id = {dialect(db).param} ORDER BY id",
                               (parent_id,)).fetchall())


def claimed_form(db: Database, row_id: int) -> tuple | None:
    """One row as a claim reads it (db/decode.CLAIM_SELECT), for decode_claimed."""
    raw = db.execute_sql(f"SELECT {CLAIM_SELECT} FROM msg_list WHERE id = {dialect(db).param}",
                         (row_id,)).fetchone()
    return None if raw is None else tuple(raw)


def token_states(db: Database) -> list[tuple]:
    """(app, expires_at, refreshed_at, refreshed_by) of every stored token: never the
    token itself, which is not even selected."""
    return list(db.execute_sql(
        "SELECT app, expires_at, refreshed_at, refreshed_by FROM access_token").fetchall())


def ping(db: Database) -> None:
    """One round trip: the database answers (or the driver's error says why not)."""
    db.execute_sql("SELECT 1")


__all__ = ["INSERTABLE", "Push", "Row", "ancestors", "claimed_form", "columns_of", "every_grant",
           "every_push", "every_row", "history", "insert", "link", "links_from", "listing",
           "max_length", "open_rows_naming", "ping", "token_states"]
