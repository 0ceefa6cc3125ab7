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

from db.connection import dialect_of
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
    groups: dict[tuple[str, bool, bool], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(_shape(o), []).append(o)
    if not groups:
        return 0
    dialect = dialect_of(db)
    written = 0
    with db.atomic():
        cursor = db.cursor()
        for shape, items in groups.items():
            if dialect == "postgres" and len(items) > 1:
                written += _pg_group(cursor, shape, items, daemon_id, now)
            elif dialect == "mysql" and len(items) > 1:
                written += _mysql_group(cursor, shape, items, daemon_id, now)
            else:
                written += _each(db, cursor, shape, items, daemon_id, now)
    return written


def _error(o: Outcome) -> str | None:
    return o.error[:ERROR_MAX] if o.error else o.error


def _each(db: Database, cursor, shape, items: list[Outcome], daemon_id: str,
          now: datetime) -> int:
    """One parameterised UPDATE run for each row (SQLite: its C loop is cheap)."""
    ts = MsgList.updated_at.db_value
    stamp = ts(now)
    rows = []
    for o in items:
        params: list = [o.status, o.errcode, _error(o), stamp]
        if o.status == "success":
            params += [o.msgid, stamp]
        if shape[1]:
            params.append(ts(o.send_at))
        params += [o.row_id, daemon_id, o.claim_attempts]
        rows.append(tuple(params))
    sql = _sql(db, shape)
    if len(rows) == 1:
        cursor.execute(sql, rows[0])
    else:
        cursor.executemany(sql, rows)
    return cursor.rowcount


def _group_sets(shape, col: str, *, ts_cast: str = "") -> list[str]:
    """SET items taking each row's values from the joined list `v`."""
    status, has_send_at, refund = shape
    sets = ["status = v.status", "errcode = v.errcode", "error = v.error",
            "updated_at = %(now)s", "lease_until = NULL"]
    if status == "success":
        sets += ["msgid = v.msgid", "sent_at = %(now)s"]
    if status == "wait":
        sets.append("claimed_by = NULL")
        if has_send_at:
            sets.append(f"send_at = v.send_at{ts_cast}")
    if refund:
        sets.append(f"attempts = {col}attempts - 1")
    return sets


def _values(o: Outcome, now_ts) -> tuple:
    return (o.row_id, o.status, o.errcode, _error(o), o.msgid,
            now_ts(o.send_at) if o.send_at else None, o.claim_attempts)


def _pg_group(cursor, shape, items: list[Outcome], daemon_id: str, now: datetime) -> int:
    """PostgreSQL: one UPDATE ... FROM (VALUES ...) for the whole group (executemany
    would be a round trip per row)."""
    from psycopg2.extras import execute_values

    sets = ", ".join(_group_sets(shape, "m."))
    sql = (f"UPDATE msg_list AS m SET {sets} FROM (VALUES %(rows)s) AS "
           "v(id, status, errcode, error, msgid, send_at, claim_attempts) "
           "WHERE m.id = v.id AND m.status = 'sending' AND m.claimed_by = %(daemon)s "
           "AND m.attempts = v.claim_attempts")
    # psycopg2's execute_values takes one %s for the VALUES list; named parameters
    # cannot mix with it, so the fixed ones are bound first.
    fixed = cursor.mogrify(sql.replace("%(rows)s", "__ROWS__"),
                           {"now": now, "daemon": daemon_id}).decode()
    sql = fixed.replace("__ROWS__", "%s")
    tpl = "(%s::bigint, %s::text, %s::int, %s::text, %s::text, %s::timestamptz, %s::int)"
    ts = MsgList.send_at.db_value
    execute_values(cursor, sql, [_values(o, ts) for o in items], template=tpl,
                   page_size=len(items))
    return cursor.rowcount


def _mysql_group(cursor, shape, items: list[Outcome], daemon_id: str, now: datetime) -> int:
    """MySQL/MariaDB: one UPDATE joined to a derived table of the group's values."""
    ts = MsgList.send_at.db_value
    one = ("SELECT %s AS id, %s AS status, %s AS errcode, %s AS error, %s AS msgid, "
           "%s AS send_at, %s AS claim_attempts")
    derived = " UNION ALL ".join([one] + ["SELECT %s, %s, %s, %s, %s, %s, %s"]
                                 * (len(items) - 1))
    sets = ", ".join(s.replace("%(now)s", "%s") for s in _group_sets(shape, "m."))
    sets = ", ".join(f"m.{item}" for item in sets.split(", "))
    sql = (f"UPDATE msg_list AS m JOIN ({derived}) AS v ON m.id = v.id "
           f"AND m.attempts = v.claim_attempts SET {sets} "
           "WHERE m.status = 'sending' AND m.claimed_by = %s")
    params: list = []
    for o in items:
        params.extend(_values(o, ts))
    stamp = MsgList.updated_at.db_value(now)
    params.extend([stamp] * sets.count("%s"))
    params.append(daemon_id)
    cursor.execute(sql, params)
    return cursor.rowcount
