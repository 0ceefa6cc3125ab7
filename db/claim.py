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

from peewee import Database

from db.decode import CLAIM_SELECT, BadRow, Row, decode_claimed
from db.dialects import Share, dialect
from db.models import MsgList

EXPIRED = "expired: expire_at passed before the message could be sent"


def _due(now: datetime):
    return (MsgList.status == "wait") & (MsgList.send_at <= now)


def claim_batch(
    db: Database, *, daemon_id: str, now: datetime, lease: float, limit: int,
    share: Share | None = None,
) -> list[Row | BadRow]:
    """Claim up to `limit` due rows, highest priority first, then oldest. `share` (k, n):
    only rows whose recipient falls in the k-th of n shares (dispatch.processes: the
    processes of one daemon never claim rows of one openid at the same time)."""
    if limit <= 0:
        return []
    d = dialect(db)
    p = d.param
    sets = (f"status = 'sending', claimed_by = {p}, lease_until = {p}, "
            f"attempts = {d.next_attempt}, updated_at = {p}, started_at = NULL")
    stamp = d.ts(now)
    until = now + timedelta(seconds=lease)
    with db.atomic():
        raw = d.claim(db, sets=sets, set_params=(daemon_id, d.ts(until), stamp), now=stamp,
                      limit=limit, returning=CLAIM_SELECT, share=share)
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
    rows = [decode_claimed(r) for r in raw]
    # RETURNING gives no order: restore the claim order (unreadable rows first: they
    # are failed at once and cost nothing)
    rows.sort(key=lambda r: (0, 0, 0, r.id) if isinstance(r, BadRow)
              else (1, -r.priority, r.send_at, r.id))
    return rows


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
        if d.name == "mysql":
            db.execute_sql(f"UPDATE msg_list SET lease_until = {p} WHERE {where}",
                           (until, daemon_id, *ids))
            cur = db.execute_sql(f"SELECT id FROM msg_list WHERE {where} AND lease_until = {p}",
                                 (daemon_id, *ids, until))
        else:
            cur = db.execute_sql(f"UPDATE msg_list SET lease_until = {p} WHERE {where} "
                                 "RETURNING id", (until, daemon_id, *ids))
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
            .execute()
        )


__all__ = ["EXPIRED", "claim_batch", "expire_overdue", "mark_started", "renew_leases"]
