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
            fresh = db.execute_sql(_claim_nonce(d.name, p), (
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


def _claim_nonce(engine: str, p: str) -> str:
    sql = (f"INSERT INTO push_nonce ({', '.join(NONCE_COLUMNS)}) "
           f"VALUES ({', '.join([p] * len(NONCE_COLUMNS))}) ")
    if engine == "mysql":  # not INSERT IGNORE: that would turn a bad value into a warning
        return sql + "ON DUPLICATE KEY UPDATE app = app"
    return sql + "ON CONFLICT (app, ts, nonce) DO NOTHING"


def purge_nonces(db: Database, before_ts: int) -> int:
    """Forget plaintext pushes whose timestamp is before `before_ts` (outside the window:
    the receiver refuses them as stale before it would look)."""
    d = dialect(db)
    with db.atomic():
        return int(db.execute_sql(f"DELETE FROM push_nonce WHERE ts < {d.param}",
                                  (before_ts,)).rowcount)


__all__ = ["MSGID_MAX", "OPENID_MAX", "TEMPLATE_ID_MAX", "Forged", "InboxEvent", "Nonce",
           "purge_nonces", "store", "unstorable"]
