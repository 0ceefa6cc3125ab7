"""Read-only summaries of the queue, shared by `status`, /metrics and systemd's STATUS=."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from peewee import fn

from db.models import STATUSES, MsgList


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

    ORDER BY send_at LIMIT 1 walks the (status, send_at) index, and unlike MIN() keeps
    the field's conversion of SQLite text to a datetime."""
    first = (MsgList.select(MsgList.send_at)
             .where((MsgList.status == "wait") & (MsgList.send_at <= now))
             .order_by(MsgList.send_at).limit(1).first())
    return first.send_at if first else None
