"""Write the results of sends back onto their rows, with the row's history, the grant
ledger's change and the fallback hop, in one short transaction per group.

Results are written in groups because a per-row transaction costs a disk sync (SQLite)
or a round trip (servers) each. Within the transaction:

1. one SELECT reads who holds the rows now. A row still `sending` under our claim
   (claimed_by and the claim's attempts) gets its result; a row the application set to
   `cancelled` while we were sending it keeps `cancelled` but gets the truth of the
   send (msgid, sent_at, errcode; error says the cancel came too late); a row another
   daemon took over (our lease ran out) is left alone.
2. rows of the same shape share one UPDATE (db/dialects.py: an executemany on SQLite,
   one statement joined to the group's values on PostgreSQL and MySQL); the history
   lines go in with one INSERT; the grant ledger is changed with one statement.
3. a failed row whose template names a fallback gets its next hop inserted (dedup_key
   derived from its own, so a re-drive never fans out twice) and names it in `error`.

Every value is made storable first (msgid length, errcode range, NUL bytes, the
length and the secrets of error texts), and if a group still cannot be written, its
rows are written one by one, each on its own: one unstorable answer never holds up
the others or gets its row sent again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from peewee import Database, DataError, IntegrityError

from db.dialects import Dialect, dialect
from logs import redact

log = logging.getLogger("herald.outcomes")

ERROR_MAX = 1000  # the error column is for people: keep it readable, bounded
MSGID_MAX = 32  # msg_list.msgid VARCHAR(32)
INT32 = (-(2**31), 2**31 - 1)
TOO_LATE = "cancelled while it was being sent; the cancel came too late: "


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a row's history (msg_event)."""

    kind: str  # claim | attempt | hold | handback | reject | retry | receipt | cancel | fallback
    channel: str | None = None
    errcode: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class GrantUse:
    """What a subscribe send taught the grant ledger: a success used one grant of
    (app, openid, template_id); a 43101 answer says none is left."""

    app: str
    openid: str
    template_id: str
    used: bool  # True: success (balance - 1); False: 43101 (balance 0)


@dataclass(frozen=True, slots=True)
class Hop:
    """The next row of a fallback chain, inserted when its parent fails."""

    template: str
    app: str | None
    openid: str
    phone: str | None
    params: str
    priority: int
    dedup_key: str
    expire_at: datetime | None = None  # the parent's: the news has the same deadline


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
    event: Event | None = None
    grant: GrantUse | None = None
    hop: Hop | None = None


Shape = tuple[str, bool]  # (status, refund_attempt): rows that share one UPDATE
VALUES = (("id", "bigint"), ("status", "text"), ("errcode", "int"), ("error", "text"),
          ("msgid", "text"), ("send_at", "timestamptz"), ("claim_attempts", "int"))


def storable(o: Outcome) -> Outcome:
    """The outcome with every value fit for its column; what had to change is said in
    `error`, so the record never hides the answer."""
    notes: list[str] = []
    msgid, errcode = o.msgid, o.errcode
    if msgid is not None and (len(msgid) > MSGID_MAX or not msgid.isprintable()):
        notes.append(f"the msgid it returned is not storable ({len(msgid)} characters: "
                     f"{clean(msgid)[:40]!r})")
        msgid = None
    if errcode is not None and not INT32[0] <= errcode <= INT32[1]:
        notes.append(f"errcode {errcode} is outside the column's range")
        errcode = None
    error = o.error
    if notes:
        error = "; ".join([*([error] if error else []), *notes])
    error = clean(error) if error is not None else None
    if (msgid, errcode, error) == (o.msgid, o.errcode, o.error):
        return o
    return replace(o, msgid=msgid, errcode=errcode, error=error)


def clean(text: str, limit: int = ERROR_MAX) -> str:
    """A text for a column people read: no secrets, no NUL (PostgreSQL refuses it),
    bounded."""
    text = redact(text.replace("\x00", "\\0"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record(db: Database, outcomes: Iterable[Outcome], *, daemon_id: str,
           now: datetime) -> int:
    """Apply outcomes in one transaction. Returns how many rows were still ours (or
    cancelled under our claim)."""
    items = [storable(o) for o in outcomes]
    for o in items:
        if o.status == "wait" and o.send_at is None:
            raise ValueError(f"row {o.row_id}: an outcome back to wait needs its send_at")
    if not items:
        return 0
    d = dialect(db)
    try:
        with db.atomic():
            return _write(db, d, items, daemon_id, now)
    except Exception as exc:
        if not _refused_value(d, exc):
            raise  # the database is away: the caller tries the whole group again
        # a value the database refuses: find it by writing the rows one by one
        log.warning("writing %d results as one group failed (%s); writing them one by "
                    "one", len(items), redact(str(exc))[:200])
    written = 0
    for o in items:
        written += _write_alone(db, d, o, daemon_id, now)
    return written


def _refused_value(d: Dialect, exc: Exception) -> bool:
    """The database refused a value (not: the database is away). MySQL reports most of
    these as OperationalError (1292 for a TIMESTAMP past 2038, 1366 ...), which the
    caller would otherwise retry, group and all, until it gave up on every row in it."""
    if isinstance(exc, DataError | IntegrityError | ValueError | TypeError | OverflowError):
        return True
    return d.is_refused_value(exc)


def _write_alone(db: Database, d: Dialect, o: Outcome, daemon_id: str, now: datetime) -> int:
    try:
        with db.atomic():
            return _write(db, d, [o], daemon_id, now)
    except Exception as exc:
        if not _refused_value(d, exc):
            raise
        reason = redact(str(exc))[:200]
    log.error("row %s: its result could not be stored (%s); recording that instead",
              o.row_id, reason, extra={"row_id": o.row_id})
    bare = Outcome(row_id=o.row_id, claim_attempts=o.claim_attempts, status=o.status,
                   send_at=o.send_at, refund_attempt=o.refund_attempt,
                   error=f"the result could not be stored ({reason}); it was: "
                         f"{o.status} errcode {o.errcode}",
                   event=Event("attempt", detail="result not storable"))
    try:
        with db.atomic():
            return _write(db, d, [storable(bare)], daemon_id, now)
    except Exception as exc:
        if not _refused_value(d, exc):
            raise
        # raising here would lose the results of every row after this one in the group
        # (and get them sent again after their leases): leave this one to stale_retry
        log.error("row %s: not even that could be stored (%s); it stays 'sending' until "
                  "stale_retry takes it back", o.row_id, redact(str(exc))[:200],
                  extra={"row_id": o.row_id})
        return 0


def _write(db: Database, d: Dialect, items: Sequence[Outcome], daemon_id: str,
           now: datetime) -> int:
    """Optimistic: each group's UPDATE carries the ownership check, and when it changed
    as many rows as it had results (the usual case) nothing more is read. Only a group
    that fell short, and a failure with a fallback hop, look at who holds the rows."""
    cursor = db.cursor()
    stamp = d.ts(now)
    done: list[Outcome] = []
    unsure: list[Outcome] = []
    groups: dict[Shape, list[Outcome]] = {}
    hops: list[Outcome] = []
    for o in items:
        if o.hop is not None and o.status == "fail":
            hops.append(o)
        else:
            groups.setdefault((o.status, o.refund_attempt), []).append(o)
    for shape, group in groups.items():
        n = _update_group(d, cursor, shape, group, daemon_id, stamp)
        (done if n == len(group) else unsure).extend(group)
    if unsure or hops:
        holders = _holders(db, d, [o.row_id for o in [*unsure, *hops]])
        for o in unsure:
            h = holders.get(o.row_id)
            if h is not None and _wrote(o, h, daemon_id, d):
                done.append(o)
            elif h is not None and _cancelled_under_us(o, h, daemon_id):
                if _cancelled(d, cursor, o, daemon_id, stamp):
                    done.append(o)
        for o in hops:
            h = holders.get(o.row_id)
            if h is None or h[1] != daemon_id or h[2] != o.claim_attempts:
                continue  # another daemon took it over (or it was deleted)
            if h[0] == "sending" and _fail_with_hop(db, d, cursor, o, daemon_id, stamp):
                done.append(o)
            elif _cancelled_under_us(o, h, daemon_id) and _cancelled(d, cursor, o,
                                                                    daemon_id, stamp):
                done.append(o)
    d.insert_many(cursor, "msg_event", EVENT_COLUMNS,
                  [_event_row(o, d, stamp, daemon_id) for o in done if o.event is not None])
    _apply_grants(d, cursor, [o.grant for o in done if o.grant is not None], stamp)
    return len(done)


Holder = tuple[str, "str | None", int, object]  # status, claimed_by, attempts, send_at


def _holders(db: Database, d: Dialect, ids: list[int]) -> dict[int, Holder]:
    """id -> (status, claimed_by, attempts, send_at) now."""
    out: dict[int, Holder] = {}
    p = d.param
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        cur = db.execute_sql(f"SELECT id, status, claimed_by, attempts, send_at FROM msg_list "
                             f"WHERE id IN ({', '.join([p] * len(chunk))})", chunk)
        for row_id, status, claimed_by, attempts, send_at in cur.fetchall():
            out[int(row_id)] = (str(status), claimed_by, attempts, send_at)
    return out


def _wrote(o: Outcome, h: Holder, daemon_id: str, d: Dialect) -> bool:
    """Does the row now hold what our UPDATE just wrote? (Which rows of a group that
    fell short were ours: a written row is unmistakable, since another daemon's claim
    sets its own claimed_by and stale_retry its own send_at.)"""
    status, claimed_by, attempts, send_at = h
    if o.status != "wait":
        return status == o.status and claimed_by == daemon_id and attempts == o.claim_attempts
    expected = o.claim_attempts - 1 if o.refund_attempt else o.claim_attempts
    from db.decode import ts_or_none

    return (status == "wait" and claimed_by is None and attempts == expected
            and ts_or_none(send_at) == o.send_at)


def _cancelled_under_us(o: Outcome, h: Holder, daemon_id: str) -> bool:
    return h[0] == "cancelled" and h[1] == daemon_id and h[2] == o.claim_attempts


def _columns(shape: Shape) -> list[tuple[str, str]]:
    """What the UPDATE sets, as (column, expression over t: the row, v: the value)."""
    status, refund = shape
    cols = [("status", "v.status"), ("errcode", "v.errcode"), ("error", "v.error"),
            ("updated_at", ":now"), ("lease_until", "NULL")]
    if status == "success":
        cols += [("msgid", "v.msgid"), ("sent_at", ":now")]
    if status == "wait":
        cols += [("claimed_by", "NULL"), ("send_at", "v.send_at")]
    if refund:
        cols.append(("attempts", "t.attempts - 1"))
        if status == "wait":
            # an attempt that did not count, e.g. a row handed back on stop after
            # on_stale: fail marked it started: it reads as never started
            cols.append(("started_at", "NULL"))
    return cols


OWNED = ("t.id = v.id AND t.status = 'sending' AND t.claimed_by = :daemon "
         "AND t.attempts = v.claim_attempts")


def _values(o: Outcome, d: Dialect) -> tuple:
    send_at = d.ts(o.send_at) if o.send_at is not None else None
    return (o.row_id, o.status, o.errcode, o.error, o.msgid, send_at, o.claim_attempts)


def _update_group(d: Dialect, cursor: object, shape: Shape, group: list[Outcome],
                  daemon_id: str, stamp: object) -> int:
    return d.update_from_values(cursor, "msg_list", VALUES, [_values(o, d) for o in group],
                                _columns(shape), OWNED, {"now": stamp, "daemon": daemon_id})


def _fail_with_hop(db: Database, d: Dialect, cursor: object, o: Outcome, daemon_id: str,
                   stamp: object) -> int:
    """Fail the row and insert its fallback hop (once, whatever re-drives happen)."""
    assert o.hop is not None
    hop = o.hop
    p = d.param
    cols = ("app", "template", "openid", "phone", "params", "priority", "parent_id",
            "dedup_key", "send_at", "expire_at", "created_at", "updated_at")
    values = (hop.app, hop.template, hop.openid, hop.phone, hop.params, hop.priority,
              o.row_id, hop.dedup_key, stamp,
              d.ts(hop.expire_at) if hop.expire_at is not None else None, stamp, stamp)
    cur = db.execute_sql(d.insert_ignore("msg_list", cols, "dedup_key"), values)
    found = db.execute_sql(f"SELECT id FROM msg_list WHERE dedup_key = {p}",
                           (hop.dedup_key,)).fetchone()
    hop_id = int(found[0]) if found else None
    inserted = bool(getattr(cur, "rowcount", 0) == 1)
    if hop_id is None:
        note = f"fallback to {hop.template} could not be queued"
    elif inserted:
        note = f"fell back to row {hop_id} ({hop.template})"
    else:
        note = f"fallback row {hop_id} ({hop.template}) exists already"
    error = clean(f"{o.error}; {note}" if o.error else note)
    event = Event("fallback", detail=note)
    d.insert_many(cursor, "msg_event", EVENT_COLUMNS,
                  [_event_row(replace(o, event=event), d, stamp, daemon_id)])
    return _update_group(d, cursor, ("fail", o.refund_attempt), [replace(o, error=error)],
                         daemon_id, stamp)


def _cancelled(d: Dialect, cursor: object, o: Outcome, daemon_id: str, stamp: object) -> int:
    """The application cancelled the row during its send: keep `cancelled`, record what
    the send did (a delivery keeps its msgid and sent_at)."""
    if o.status == "success":
        what = f"it was delivered (msgid {o.msgid})" if o.msgid else "it was delivered"
        sets = [("msgid", "v.msgid"), ("sent_at", ":now")]
    elif o.status == "fail":
        what = f"the send failed: {o.error}"
        sets = []
    else:
        what = f"not sent again ({o.error})" if o.error else "not sent again"
        sets = []
    row = replace(o, error=clean(TOO_LATE + what))
    sets = [("errcode", "v.errcode"), ("error", "v.error"), ("updated_at", ":now"),
            ("lease_until", "NULL"), *sets]
    where = ("t.id = v.id AND t.status = 'cancelled' AND t.claimed_by = :daemon "
             "AND t.attempts = v.claim_attempts")
    return d.update_from_values(cursor, "msg_list", VALUES, [_values(row, d)], sets, where,
                                {"now": stamp, "daemon": daemon_id})


EVENT_COLUMNS = ("msg_id", "at", "kind", "channel", "errcode", "detail", "daemon")


def _event_row(o: Outcome, d: Dialect, stamp: object, daemon_id: str) -> tuple:
    e = o.event
    assert e is not None
    errcode = e.errcode if e.errcode is None or INT32[0] <= e.errcode <= INT32[1] else None
    detail = clean(e.detail) if e.detail else None
    return (o.row_id, stamp, e.kind, e.channel, errcode, detail, daemon_id)


def _apply_grants(d: Dialect, cursor: object, uses: list[GrantUse], stamp: object) -> None:
    """Success: one grant used (a known balance goes down, never below 0); 43101: none
    left (the ledger learns it even for a user it had not seen)."""
    used = Counter((u.app, u.openid, u.template_id) for u in uses if u.used)
    if used:
        d.update_from_values(
            cursor, "subscribe_grant",
            (("app", "text"), ("openid", "text"), ("template_id", "text"), ("n", "int")),
            [(*key, n) for key, n in used.items()],
            [("balance", "CASE WHEN t.balance > v.n THEN t.balance - v.n ELSE 0 END"),
             ("updated_at", ":now")],
            "t.app = v.app AND t.openid = v.openid AND t.template_id = v.template_id "
            "AND t.balance IS NOT NULL", {"now": stamp})
    empty = {(u.app, u.openid, u.template_id) for u in uses if not u.used}
    for app, openid, template_id in sorted(empty):
        upsert_grant(d, cursor, app, openid, template_id, balance=0, status=None, stamp=stamp)


def upsert_grant(d: Dialect, cursor: object, app: str, openid: str, template_id: str, *,
                 balance: int | None | str, status: str | None, stamp: object) -> None:
    """Set a ledger entry. balance: a number, None (unknown) or '+1' (one more grant);
    status None keeps the present one (accept for a new entry)."""
    p = d.param
    new_balance = 1 if balance == "+1" else balance
    if balance == "+1":
        bal = ("CASE WHEN subscribe_grant.balance IS NULL THEN 1 "
               "ELSE subscribe_grant.balance + 1 END")
    else:
        bal = "excluded.balance"
    insert = ("INSERT INTO subscribe_grant (app, openid, template_id, balance, status, "
              f"updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p})")
    params: list[object] = [app, openid, template_id, new_balance, status or "accept", stamp]
    sql = d.upsert(insert, "app, openid, template_id", [
        ("balance", bal),
        ("status", "excluded.status" if status else "subscribe_grant.status"),
        ("updated_at", "excluded.updated_at")])
    cursor.execute(sql, params)  # type: ignore[attr-defined]


__all__ = ["ERROR_MAX", "EVENT_COLUMNS", "Event", "GrantUse", "Hop", "Outcome", "clean",
           "record", "storable", "upsert_grant"]
