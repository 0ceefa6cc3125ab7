"""Write the results of sends back onto their rows.

Results are written in groups, one short transaction per group, because a per-row
transaction costs a disk sync (SQLite) or a round trip (servers) each. Within the
transaction rows of the same shape (success / fail / back to wait) go in one
executemany call of one parameterised UPDATE, which keeps the per-row cost to the
driver's own loop instead of building a query object per row.

Every update checks the row is still ours: status 'sending', our claimed_by and the
attempts count of our claim. A slow daemon whose lease ran out (and whose row another
daemon has since claimed) writes nothing; record() reports how many rows were written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.models import MsgList

ERROR_MAX = 1000  # the error column is for people: keep it readable, bounded


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed row.

    status: 'success' | 'fail' | 'wait' (back in the queue at send_at).
    refund_attempt: the attempt did not count (quota deferral, rows handed back).
    """

    row_id: int
    claim_attempts: int  # attempts as set by our claim: part of the ownership check
    status: str
    errcode: int | None = None
    error: str | None = None
    msgid: str | None = None
    send_at: datetime | None = None
    refund_attempt: bool = False


def _shape(o: Outcome) -> tuple[str, bool, bool]:
    return (o.status, o.status == "wait" and o.send_at is not None, o.refund_attempt)


def _sql(db: Database, shape: tuple[str, bool, bool]) -> str:
    status, has_send_at, refund = shape
    p = db.param

    def q(name: str) -> str:  # db.quote is the pair of quote characters, e.g. '""'
        return f"{db.quote[0]}{name}{db.quote[1]}"

    sets = [f"{q('status')} = {p}", f"{q('errcode')} = {p}", f"{q('error')} = {p}",
            f"{q('updated_at')} = {p}", f"{q('lease_until')} = NULL"]
    if status == "success":
        sets += [f"{q('msgid')} = {p}", f"{q('sent_at')} = {p}"]
    if status == "wait":
        sets.append(f"{q('claimed_by')} = NULL")
        if has_send_at:
            sets.append(f"{q('send_at')} = {p}")
    if refund:
        sets.append(f"{q('attempts')} = {q('attempts')} - 1")
    return (f"UPDATE {q('msg_list')} SET {', '.join(sets)} WHERE {q('id')} = {p} "
            f"AND {q('status')} = 'sending' AND {q('claimed_by')} = {p} "
            f"AND {q('attempts')} = {p}")


def record(db: Database, outcomes: Iterable[Outcome], *, daemon_id: str, now: datetime) -> int:
    """Apply outcomes in one transaction. Returns how many rows were still ours."""
    groups: dict[tuple[str, bool, bool], list[tuple]] = {}
    ts = MsgList.updated_at.db_value
    stamp = ts(now)
    for o in outcomes:
        error = o.error[:ERROR_MAX] if o.error else o.error
        params: list = [o.status, o.errcode, error, stamp]
        shape = _shape(o)
        if o.status == "success":
            params += [o.msgid, stamp]
        if shape[1]:
            params.append(ts(o.send_at))
        params += [o.row_id, daemon_id, o.claim_attempts]
        groups.setdefault(shape, []).append(tuple(params))
    if not groups:
        return 0
    written = 0
    with db.atomic():
        cursor = db.cursor()
        for shape, rows in groups.items():
            sql = _sql(db, shape)
            if len(rows) == 1:
                cursor.execute(sql, rows[0])
                written += cursor.rowcount
            else:
                cursor.executemany(sql, rows)
                written += cursor.rowcount
    return written
