"""Write the results of sends back onto their rows.

Results are written in groups, one short transaction per group, because a per-row
transaction costs a disk sync (SQLite) or a round trip (servers) each. Within the
transaction, rows of the same shape (success / fail / back to wait, attempt refunded
or not) share one UPDATE: on SQLite an executemany of a parameterised statement (its
C loop is cheap), on PostgreSQL and MySQL one statement joined to the group's values
(their executemany is a round trip per row).

Every update checks the row is still ours: status 'sending', our claimed_by and the
attempts count of our claim. A slow daemon whose lease ran out (and whose row another
daemon has since claimed) writes nothing; record() reports how many rows were written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.connection import dialect_of
from db.models import MsgList

ERROR_MAX = 1000  # the error column is for people: keep it readable, bounded


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed row.

    status: 'success' | 'fail' | 'wait' (back in the queue at send_at, which it needs).
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


Shape = tuple[str, bool]  # (status, refund_attempt): rows that share one UPDATE


def _columns(shape: Shape) -> list[tuple[str, str]]:
    """What the UPDATE sets, as (column, source). Sources: 'row' (the outcome's own
    value), 'now', 'null', and 'minus1' (attempts - 1). One list for every dialect."""
    status, refund = shape
    cols = [("status", "row"), ("errcode", "row"), ("error", "row"), ("updated_at", "now"),
            ("lease_until", "null")]
    if status == "success":
        cols += [("msgid", "row"), ("sent_at", "now")]
    if status == "wait":
        cols += [("claimed_by", "null"), ("send_at", "row")]
    if refund:
        cols.append(("attempts", "minus1"))
    return cols


def _set_clause(shape: Shape, *, row: Callable[[str], str], now: str, prefix: str = "") -> str:
    """SET items; `row(column)` and `now` are how the statement refers to those values."""
    parts = []
    for col, source in _columns(shape):
        if source == "row":
            value = row(col)
        elif source == "now":
            value = now
        elif source == "null":
            value = "NULL"
        else:  # minus1
            value = f"{prefix}{col} - 1"
        parts.append(f"{prefix}{col} = {value}")
    return ", ".join(parts)


def _value(o: Outcome, col: str) -> object:
    if col == "error":
        return o.error[:ERROR_MAX] if o.error else o.error
    if col == "send_at":
        return MsgList.send_at.db_value(o.send_at)
    return getattr(o, col)


def record(db: Database, outcomes: Iterable[Outcome], *, daemon_id: str, now: datetime) -> int:
    """Apply outcomes in one transaction. Returns how many rows were still ours."""
    groups: dict[Shape, list[Outcome]] = {}
    for o in outcomes:
        if o.status == "wait" and o.send_at is None:
            raise ValueError(f"row {o.row_id}: an outcome back to wait needs its send_at")
        groups.setdefault((o.status, o.refund_attempt), []).append(o)
    if not groups:
        return 0
    write = {"postgres": _pg_group, "mysql": _mysql_group}.get(dialect_of(db), _each)
    stamp = MsgList.updated_at.db_value(now)
    written = 0
    with db.atomic():
        cursor = db.cursor()
        for shape, items in groups.items():
            written += write(db, cursor, shape, items, daemon_id, stamp)
    return written


def _each(db: Database, cursor, shape: Shape, items: list[Outcome], daemon_id: str,
          stamp: object) -> int:
    """SQLite: one parameterised UPDATE, run for each row by the driver's C loop."""
    p = db.param
    sets = _set_clause(shape, row=lambda c: p, now=p)
    sql = (f"UPDATE msg_list SET {sets} WHERE id = {p} AND status = 'sending' "
           f"AND claimed_by = {p} AND attempts = {p}")
    bound = [(c, src) for c, src in _columns(shape) if src in ("row", "now")]
    cursor.executemany(sql, [
        (*(_value(o, c) if src == "row" else stamp for c, src in bound),
         o.row_id, daemon_id, o.claim_attempts)
        for o in items
    ])
    return cursor.rowcount


VALUE_COLUMNS = ("id", "status", "errcode", "error", "msgid", "send_at", "claim_attempts")


def _values(o: Outcome) -> tuple:
    return (o.row_id, o.status, o.errcode, _value(o, "error"), o.msgid,
            _value(o, "send_at"), o.claim_attempts)


def _pg_group(db: Database, cursor, shape: Shape, items: list[Outcome], daemon_id: str,
              stamp: object) -> int:
    """PostgreSQL: one UPDATE ... FROM (VALUES ...) for the whole group."""
    from psycopg2.extras import execute_values

    sets = _set_clause(shape, row=lambda c: f"v.{c}", now="%(now)s")
    sql = (f"UPDATE msg_list AS m SET {sets} FROM (VALUES __ROWS__) AS "
           f"v({', '.join(VALUE_COLUMNS)}) WHERE m.id = v.id AND m.status = 'sending' "
           "AND m.claimed_by = %(daemon)s AND m.attempts = v.claim_attempts")
    # execute_values takes a single %s for the VALUES list and cannot mix it with named
    # parameters, so the fixed ones are bound first.
    sql = cursor.mogrify(sql, {"now": stamp, "daemon": daemon_id}).decode()
    tpl = "(%s::bigint, %s::text, %s::int, %s::text, %s::text, %s::timestamptz, %s::int)"
    execute_values(cursor, sql.replace("__ROWS__", "%s"), [_values(o) for o in items],
                   template=tpl, page_size=len(items))
    return cursor.rowcount


def _mysql_group(db: Database, cursor, shape: Shape, items: list[Outcome], daemon_id: str,
                 stamp: object) -> int:
    """MySQL/MariaDB: one UPDATE joined to a derived table of the group's values."""
    first = "SELECT " + ", ".join(f"%s AS {c}" for c in VALUE_COLUMNS)
    rest = "SELECT " + ", ".join(["%s"] * len(VALUE_COLUMNS))
    derived = " UNION ALL ".join([first] + [rest] * (len(items) - 1))
    sets = _set_clause(shape, row=lambda c: f"v.{c}", now="%s", prefix="m.")
    sql = (f"UPDATE msg_list AS m JOIN ({derived}) AS v ON m.id = v.id "
           f"AND m.attempts = v.claim_attempts SET {sets} "
           "WHERE m.status = 'sending' AND m.claimed_by = %s")
    params = [value for o in items for value in _values(o)]
    params += [stamp] * sum(1 for _, src in _columns(shape) if src == "now")
    params.append(daemon_id)
    cursor.execute(sql, params)
    return cursor.rowcount
