"""Claim due rows: move them wait -> sending in one statement or transaction; keep
the rows a daemon holds; mark when a send starts.

A claimed row carries claimed_by (this daemon), lease_until (when another daemon may
take it back) and attempts+1. Every later write to the row checks claimed_by (and
results also attempts), so a daemon whose lease ran out cannot overwrite its
successor's result.

How each engine claims is in db/dialects.py (SQLite: UPDATE ... WHERE id IN (SELECT
... LIMIT n) RETURNING; PostgreSQL: a MATERIALIZED CTE with FOR UPDATE SKIP LOCKED;
MySQL: SELECT ... FOR UPDATE SKIP LOCKED, UPDATE by id, read back). The indexes of
db/ddl/<dialect>.sql follow the claim's ORDER BY, so a claim reads (and on MySQL
locks) only the rows it takes. The claimed rows come back undecoded and are decoded
one by one (db/decode.py): a row nobody can read fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter

from peewee import Database

from db import spending
from db.decode import CLAIM_SELECT, COLLAPSE_KEY_AT, BadRow, Row, decode_claimed, keyed
from db.dialects import Share, dialect
from db.models import MsgList

_KEY = itemgetter(COLLAPSE_KEY_AT)  # a claimed row's collapse_key, undecoded
EXPIRED = "expired: expire_at passed before the message could be sent"


def _due(now: datetime):
    return (MsgList.status == "wait") & (MsgList.send_at <= now)


class Claimed(list[Row | BadRow]):
    """The rows a claim returns; `taken`: how many due rows it took, the superseded
    ones (cancelled in the claim) included. A claim that took `limit` rows says a
    backlog is there, however many of them a newer row superseded."""

    taken: int = 0


def claim_batch(
    db: Database, *, daemon_id: str, now: datetime, lease: float, limit: int,
    share: Share | None = None,
) -> Claimed:
    """Claim up to `limit` due rows, highest priority first, then oldest. `share` (k, n):
    only rows whose recipient falls in the k-th of n shares (dispatch.processes: the
    processes of one daemon never claim rows of one openid at the same time)."""
    if limit <= 0:
        return Claimed()
    d = dialect(db)
    p = d.param
    sets = (f"status = 'sending', claimed_by = {p}, lease_until = {p}, "
            f"attempts = {d.next_attempt}, updated_at = {p}, started_at = NULL")
    stamp = d.ts(now)
    until = now + timedelta(seconds=lease)
    with db.atomic():
        raw = d.claim(db, sets=sets, set_params=(daemon_id, d.ts(until), stamp), now=stamp,
                      limit=limit, returning=CLAIM_SELECT, share=share)
        taken = len(raw)
        collapsed = None
        if raw and any(map(_KEY, raw)):  # (an empty key is no key)
            # newest wins: rows a newer one supersedes end cancelled, unseen as claimed
            collapsed = spending.collapse(db, d, raw, stamp=stamp, daemon_id=daemon_id)
            if collapsed.superseded:
                raw = [r for r in raw if r[0] not in collapsed.superseded]
        if raw:
            # the history line of each claim, in the claim's own transaction, built by
            # the database from the claimed rows (no per-row work here)
            ids = [r[0] for r in raw]
            detail = d.concat("'attempt '", "attempts", p)
            db.execute_sql(
                "INSERT INTO msg_event (msg_id, at, kind, detail, daemon) "
                f"SELECT id, {p}, 'claim', {detail}, {p} FROM msg_list "
                f"WHERE id IN ({', '.join([p] * len(ids))})",
                (stamp, f", lease until {until:%H:%M:%S}", daemon_id, *ids))
    times: dict[object, datetime] = {}  # each distinct timestamp parsed once
    rows = [decode_claimed(r, times) for r in raw]
    if collapsed is not None:
        rows = [_with_collapse(r, collapsed) for r in rows]
    # RETURNING gives no order: restore the claim order (unreadable rows first: they
    # are failed at once and cost nothing)
    rows.sort(key=lambda r: (0, 0, 0, r.id) if isinstance(r, BadRow)
              else (1, -r.priority, r.send_at, r.id))
    out = Claimed(rows)
    out.taken = taken
    return out


def _with_collapse(row: Row | BadRow, collapsed: spending.Collapsed) -> Row | BadRow:
    """A kept row with a key learns its created_at (its collapse window counts from it);
    a row whose key cannot be used fails alone."""
    if isinstance(row, BadRow):
        return row
    why = collapsed.bad.get(row.id)
    if why is not None:
        return BadRow(id=row.id, attempts=row.attempts, column="collapse_key", reason=why,
                      template=row.template)
    if row.id in collapsed.created:
        return keyed(row, collapsed.created[row.id])
    return row


def renew_leases(db: Database, ids: Sequence[int], *, daemon_id: str,
                 lease_until: datetime) -> set[int]:
    """Extend the lease of rows this daemon holds; the ids still ours (one statement).

    A row missing from the answer was taken from us (its lease ran out while the
    database was away and stale_retry handed it on): it must not be sent.
    """
    if not ids:
        return set()
    d = dialect(db)
    p = d.param
    marks = ", ".join([p] * len(ids))
    until = d.ts(lease_until)
    where = f"status = 'sending' AND claimed_by = {p} AND id IN ({marks})"
    with db.atomic():
        if d.returning:
            cur = db.execute_sql(f"UPDATE msg_list SET lease_until = {p} WHERE {where} "
                                 "RETURNING id", (until, daemon_id, *ids))
        else:
            db.execute_sql(f"UPDATE msg_list SET lease_until = {p} WHERE {where}",
                           (until, daemon_id, *ids))
            cur = db.execute_sql(f"SELECT id FROM msg_list WHERE {where} AND lease_until = {p}",
                                 (daemon_id, *ids, until))
        return {int(r[0]) for r in cur.fetchall()}


def mark_started(db: Database, row_id: int, attempts: int, *, daemon_id: str,
                 now: datetime) -> bool:
    """Record that this claim's send is about to start (on_stale: fail needs to know
    which rows may have reached WeChat). False: the row is no longer ours, do not send."""
    d = dialect(db)
    p = d.param
    with db.atomic():
        cur = db.execute_sql(
            f"UPDATE msg_list SET started_at = {p} WHERE id = {p} AND status = 'sending' "
            f"AND claimed_by = {p} AND attempts = {p}", (d.ts(now), row_id, daemon_id, attempts))
        return cur.rowcount == 1


def expire_overdue(db: Database, *, now: datetime) -> int:
    """Waiting rows past expire_at end 'fail' (expired) without being sent."""
    with db.atomic():
        return int(
            MsgList.update(
                {
                    MsgList.status: "fail",
                    MsgList.error: EXPIRED,
                    MsgList.errcode: None,
                    MsgList.updated_at: now,
                }
            )
            .where(_due(now) & MsgList.expire_at.is_null(False) & (MsgList.expire_at <= now))
            .execute(db)
        )


__all__ = ["EXPIRED", "Claimed", "claim_batch", "expire_overdue", "mark_started", "renew_leases"]
