"""Claim due rows: move them wait -> sending in one statement or transaction.

A claimed row carries claimed_by (this daemon), lease_until (when another daemon may
take it back) and attempts+1. Every later write to the row checks claimed_by and
attempts, so a daemon whose lease ran out cannot overwrite its successor's result.

- SQLite: UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING, under SQLite's single
  writer (the transaction takes the write lock at BEGIN IMMEDIATE).
- PostgreSQL: the same statement with FOR UPDATE SKIP LOCKED in the subquery, so
  daemons never wait on each other's rows.
- MySQL 8 / MariaDB 10.6+: no UPDATE ... RETURNING, so SELECT ... FOR UPDATE SKIP
  LOCKED, UPDATE by id and read back, in one short transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from peewee import Database

from db.connection import dialect_of
from db.models import MsgList


def _due(now: datetime):
    return (MsgList.status == "wait") & (MsgList.send_at <= now)


def claim_batch(
    db: Database, *, daemon_id: str, now: datetime, lease: float, limit: int
) -> list[MsgList]:
    """Claim up to `limit` due rows, highest priority first, then oldest."""
    if limit <= 0:
        return []
    lease_until = now + timedelta(seconds=lease)
    changes = {
        MsgList.status: "sending",
        MsgList.claimed_by: daemon_id,
        MsgList.lease_until: lease_until,
        MsgList.attempts: MsgList.attempts + 1,
        MsgList.updated_at: now,
    }
    pick = (
        MsgList.select(MsgList.id)
        .where(_due(now))
        .order_by(MsgList.priority.desc(), MsgList.send_at, MsgList.id)
        .limit(limit)
    )
    dialect = dialect_of(db)
    with db.atomic():
        if dialect == "mysql":
            ids = [r.id for r in pick.for_update(skip_locked=True)]
            if not ids:
                return []
            MsgList.update(changes).where(MsgList.id.in_(ids)).execute()
            rows = list(MsgList.select().where(MsgList.id.in_(ids)))
        else:
            if dialect == "postgres":
                pick = pick.for_update(skip_locked=True)
            query = MsgList.update(changes).where(MsgList.id.in_(pick)).returning(MsgList)
            rows = list(query.execute())
    # RETURNING gives no order: restore the claim order.
    rows.sort(key=lambda r: (-r.priority, r.send_at, r.id))
    return rows


def expire_overdue(db: Database, *, now: datetime) -> int:
    """Waiting rows past expire_at end 'fail' (expired) without being sent."""
    with db.atomic():
        return (
            MsgList.update(
                {
                    MsgList.status: "fail",
                    MsgList.error: "expired: expire_at passed before the message could be sent",
                    MsgList.errcode: None,
                    MsgList.updated_at: now,
                }
            )
            .where(_due(now) & MsgList.expire_at.is_null(False) & (MsgList.expire_at <= now))
            .execute()
        )
