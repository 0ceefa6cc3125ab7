"""The push inbox's writes: what the receiver (web/push.py) stores, and the values no
engine may be handed.

- `unstorable(text, limit)`: why a text cannot be stored alike on SQLite, PostgreSQL and
  MariaDB (a NUL, which PostgreSQL refuses; a lone surrogate such as JSON's "\\ud800",
  which is no UTF-8 at all; more characters than the column holds). The receiver refuses
  such a push with a 4xx and the applier closes such an event with its error: one
  value never stops the inbox, and the same input gets the same answer on every engine.
- `store(...)`: the events of one request in one transaction (an SMS batch whole or not
  at all), each once (its dedup_key), and for a plaintext-mode push its (app,
  timestamp, nonce) with the hash of its body (push_nonce): the same body again is a
  retry, another body a forgery, refused whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.dialects import dialect

PUSH_COLUMNS = ("app", "source", "kind", "openid", "dedup_key", "payload", "received_at")
NONCE_COLUMNS = ("app", "ts", "nonce", "body_hash")
# Column sizes (db/ddl): push_event.kind, .openid, .dedup_key; msg_list.msgid;
# subscribe_grant.template_id; push_nonce.nonce. A TEXT column holds 65,535 bytes on
# MariaDB, the smallest of the three.
KIND_MAX = 64
OPENID_MAX = 128
DEDUP_MAX = 191
MSGID_MAX = 32
TEMPLATE_ID_MAX = 128
NONCE_MAX = 64
TEXT_MAX_BYTES = 65535


def unstorable(text: str, limit: int | None = None) -> str | None:
    """Why `text` cannot be stored the same way on every engine, or None if it can."""
    if "\x00" in text:
        return "holds a NUL character"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (not UTF-8)"
    if limit is not None and len(text) > limit:
        return f"is longer than {limit} characters"
    if len(encoded) > TEXT_MAX_BYTES:
        return f"is longer than {TEXT_MAX_BYTES} bytes"
    return None


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """One push_event row as the receiver stores it."""

    app: str | None  # None: not an app's (SMS reports)
    source: str  # wechat | sms
    kind: str
    openid: str | None
    dedup_key: str
    payload: str  # JSON

    def problem(self) -> str | None:
        """Which field cannot be stored, and why; None if every field can."""
        for name, value, limit in (("kind", self.kind, KIND_MAX),
                                   ("openid", self.openid, OPENID_MAX),
                                   ("dedup_key", self.dedup_key, DEDUP_MAX),
                                   ("payload", self.payload, None)):
            if value is not None and (why := unstorable(value, limit)) is not None:
                return f"{name} {why}"
        return None


@dataclass(frozen=True, slots=True)
class Nonce:
    """A plaintext-mode push's (app, timestamp, nonce), and its body's hash."""

    app: str
    ts: int
    nonce: str
    body_hash: str

    @classmethod
    def of(cls, app: str, ts: int, nonce: str, body: bytes) -> Nonce:
        return cls(app, ts, nonce, hashlib.sha256(body).hexdigest())


class Forged(Exception):
    """This (app, timestamp, nonce) came before with another body: nothing is stored."""


def store(db: Database, events: Sequence[InboxEvent], now: datetime,
          nonce: Nonce | None = None) -> int:
    """Store `events` in one transaction, each unless its dedup_key is there; with
    `nonce`, first claim it for this body (Forged if another body has it). Returns how
    many events were new."""
    d = dialect(db)
    p = d.param
    received = d.ts(now)
    with db.atomic():
        if nonce is not None:
            fresh = db.execute_sql(d.insert_ignore("push_nonce", NONCE_COLUMNS, "app, ts, nonce"), (
                nonce.app, nonce.ts, nonce.nonce, nonce.body_hash)).rowcount
            if fresh != 1:
                # The insert found the row: it waited for the transaction that wrote it
                # to commit, and sessions read committed data (READ COMMITTED on every
                # engine, SQLite's single writer), so this read sees that row.
                row = db.execute_sql(
                    f"SELECT body_hash FROM push_nonce WHERE app = {p} AND ts = {p} "
                    f"AND nonce = {p}", (nonce.app, nonce.ts, nonce.nonce)).fetchone()
                if row is None or str(row[0]) != nonce.body_hash:
                    raise Forged()
        new = 0
        sql = d.insert_ignore("push_event", PUSH_COLUMNS, "dedup_key")
        for e in events:
            cur = db.execute_sql(sql, (e.app, e.source, e.kind, e.openid, e.dedup_key,
                                       e.payload, received))
            new += int(cur.rowcount == 1)
        return new


def purge_nonces(db: Database, before_ts: int) -> int:
    """Forget plaintext pushes whose timestamp is before `before_ts` (outside the window:
    the receiver refuses them as stale before it would look)."""
    d = dialect(db)
    with db.atomic():
        return int(db.execute_sql(f"DELETE FROM push_nonce WHERE ts < {d.param}",
                                  (before_ts,)).rowcount)


# ----------------------------------------------------------------- applying the inbox
# jobs/events.py decides what each event means; these are its statements, run inside
# the transaction of one page of events.

EVENT_SELECT = "id, app, source, kind, openid, payload, received_at"


def unapplied(db: Database, *, now: datetime, limit: int, due: bool) -> list[tuple]:
    """A page of events not applied yet (EVENT_SELECT), locked against other daemons:
    due=False the new ones in the order they came (an accept, then a reject); due=True
    the receipts waiting for their row whose next look has come."""
    d = dialect(db)
    p = d.param
    if due:
        sql = (f"SELECT {EVENT_SELECT} FROM push_event WHERE applied_at IS NULL AND "
               f"next_check_at <= {p} ORDER BY next_check_at, id LIMIT {int(limit)}")
        args: tuple[object, ...] = (d.ts(now),)
    else:
        sql = (f"SELECT {EVENT_SELECT} FROM push_event WHERE applied_at IS NULL AND "
               f"next_check_at IS NULL ORDER BY id LIMIT {int(limit)}")
        args = ()
    return list(db.execute_sql(sql + d.skip_locked, args).fetchall())


def close(db: Database, event_id: object, now: datetime, error: str | None) -> None:
    """The event is applied (error: why it changed nothing)."""
    p = dialect(db).param
    db.execute_sql(f"UPDATE push_event SET applied_at = {p}, error = {p} WHERE id = {p}",
                   (dialect(db).ts(now), error, event_id))


def look_again(db: Database, at: datetime, ids: Sequence[int]) -> None:
    """Receipts still waiting for their row: the next look at them is at `at`."""
    d = dialect(db)
    p = d.param
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        db.execute_sql(f"UPDATE push_event SET next_check_at = {p} WHERE id IN "
                       f"({', '.join([p] * len(chunk))})", (d.ts(at), *chunk))


def rows_with_msgids(db: Database, msgids: Sequence[str]) -> list[tuple]:
    """(msgid, id, app, template, openid, phone) of the rows holding these msgids (SMS:
    sids), in one query per 500."""
    p = dialect(db).param
    out: list[tuple] = []
    for start in range(0, len(msgids), 500):
        chunk = list(msgids[start:start + 500])
        out += db.execute_sql(f"SELECT msgid, id, app, template, openid, phone FROM msg_list "
                              f"WHERE msgid IN ({', '.join([p] * len(chunk))})",
                              chunk).fetchall()
    return out


def set_receipt(db: Database, row_id: int, *, state: str, error: str | None, at: datetime,
                now: datetime, detail: str, daemon_id: str | None) -> None:
    """A row's receipt (delivered or failed), with a line in its history."""
    from db.outcomes import EVENT_COLUMNS

    d = dialect(db)
    p = d.param
    db.execute_sql(f"UPDATE msg_list SET receipt = {p}, receipt_error = {p}, "
                   f"receipt_at = {p} WHERE id = {p}", (state, error, d.ts(at), row_id))
    d.insert_many(db.cursor(), "msg_event", EVENT_COLUMNS, [
        (row_id, d.ts(now), "receipt", None, None, detail, daemon_id)])


__all__ = ["EVENT_SELECT", "Forged", "InboxEvent", "MSGID_MAX", "Nonce", "OPENID_MAX",
           "TEMPLATE_ID_MAX", "close", "look_again", "purge_nonces", "rows_with_msgids",
           "set_receipt", "store", "unapplied", "unstorable"]
