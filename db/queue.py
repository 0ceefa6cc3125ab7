"""Read-only summaries of the queue, shared by `status`, /metrics and systemd's STATUS=.

Like the claim, these readers decode rows one by one (db/decode.py): a value another
program wrote that cannot be read (a MySQL zero date, SQLite text that is no time or
not UTF-8) is skipped or shown quoted, never an exception that takes `status` or a
metrics scrape down with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from peewee import fn

from db.decode import shown, text_or_shown, ts_or_none
from db.models import STATUSES, MsgList

# due waiting rows looked at for the oldest readable send_at (unreadable ones sort first
# on MySQL, where a zero date is below every real one)
OLDEST_READ_AHEAD = 20


def counts_by_status(statuses: Iterable[str] = STATUSES) -> dict[str, int]:
    """Rows per status, every asked-for status present (0 when none)."""
    wanted = tuple(statuses)
    query = MsgList.select(MsgList.status, fn.COUNT(MsgList.id)).group_by(MsgList.status)
    if wanted != STATUSES:
        query = query.where(MsgList.status.in_(wanted))
    counts = dict.fromkeys(wanted, 0)
    counts.update((s, n) for s, n in query.tuples() if s in counts)
    return counts


def oldest_due_wait(now: datetime) -> datetime | None:
    """send_at of the oldest waiting row that is due (scheduled rows are not backlog).

    ORDER BY send_at LIMIT n walks the (status, send_at) index. The values are read
    raw (peewee would convert them, and raise, by the column name) and decoded here: a
    send_at nobody can read is skipped (dispatch fails that row when it claims it)."""
    query = (MsgList.select(MsgList.send_at)
             .where((MsgList.status == "wait") & (MsgList.send_at <= now))
             .order_by(MsgList.send_at).limit(OLDEST_READ_AHEAD))
    for (raw,) in _raw(query):
        value = ts_or_none(raw)
        if value is not None:
            return value
    return None


def _raw(query: Any) -> list[tuple]:
    """The rows of a query as the driver returns them, no field conversion."""
    sql, params = query.sql()
    return list(MsgList._meta.database.execute_sql(sql, params).fetchall())


def _int_or_shown(value: object) -> int | str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return shown(value)


def recent_failures(limit: int) -> list[dict[str, Any]]:
    """The latest failed rows (id, template, errcode, error, updated_at), each column
    decoded on its own: an unreadable value is shown quoted."""
    query = (MsgList.select(MsgList.id, MsgList.template, MsgList.errcode, MsgList.error,
                            MsgList.updated_at)
             .where(MsgList.status == "fail")
             .order_by(MsgList.updated_at.desc(), MsgList.id.desc()).limit(limit))
    out = []
    for row_id, template, errcode, error, updated_at in _raw(query):
        at = ts_or_none(updated_at)
        out.append({"id": row_id, "template": text_or_shown(template),
                    "errcode": _int_or_shown(errcode), "error": text_or_shown(error),
                    "updated_at": at.isoformat() if at else
                    (None if updated_at is None else shown(updated_at))})
    return out


__all__ = ["counts_by_status", "oldest_due_wait", "recent_failures"]
