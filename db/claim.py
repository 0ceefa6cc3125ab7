"""Claim due rows: move them wait -> sending in one statement or transaction.

A claimed row carries claimed_by (this daemon), lease_until (when another daemon may
take it back) and attempts+1. Every later write to the row checks claimed_by and
attempts, so a daemon whose lease ran out cannot overwrite its successor's result.

- SQLite: UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING, under SQLite's single
  writer (the transaction takes the write lock at BEGIN IMMEDIATE).
- PostgreSQL: WITH picked AS MATERIALIZED (SELECT ... FOR UPDATE SKIP LOCKED)
  UPDATE ... FROM picked RETURNING, so daemons never wait on each other's rows.
- MySQL 8 / MariaDB 10.6+: no UPDATE ... RETURNING, so SELECT ... FOR UPDATE SKIP
  LOCKED, UPDATE by id and read back, in one short READ COMMITTED transaction.

The indexes of db/ddl/<dialect>.sql follow the claim's ORDER BY, so a claim reads
(and on MySQL locks) only the rows it takes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from peewee import Database, ModelSelect

from db.connection import dialect_of
from db.models import MsgList

EXPIRED = "expired: expire_at passed before the message could be sent"


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
    if dialect == "mysql":
        rows = _claim_mysql(db, pick, changes)
    elif dialect == "postgres":
        # A materialized CTE runs the locking SELECT exactly once. With
        # `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` the planner may rescan
        # the subquery (the inner side of a nested loop), and each rescan skips the
        # rows the previous one locked: more than n rows claimed.
        picked = pick.for_update(skip_locked=True).cte("picked", materialized=True)
        query = (
            MsgList.update(changes)
            .with_cte(picked)
            .from_(picked)
            .where(MsgList.id == picked.c.id)
            .returning(MsgList)
        )
        with db.atomic():
            rows = list(query.execute())
    else:
        # SQLite has one writer: BEGIN IMMEDIATE (lock_type) already excludes others.
        query = MsgList.update(changes).where(MsgList.id.in_(pick)).returning(MsgList)
        with db.atomic():
            rows = list(query.execute())
    # RETURNING gives no order: restore the claim order.
    rows.sort(key=lambda r: (-r.priority, r.send_at, r.id))
    return rows


def _claim_mysql(db: Database, pick: ModelSelect, changes: dict) -> list[MsgList]:
    """SELECT ... FOR UPDATE SKIP LOCKED, UPDATE by id, read back: one transaction.

    READ COMMITTED: InnoDB then takes no gap locks (an application's INSERT never
    waits for a claim) and drops the locks on rows it read but did not match
    (a high-priority row scheduled for later), so only the claimed rows stay locked.
    """
    with db.atomic(isolation_level="READ COMMITTED"):
        ids = [r.id for r in pick.for_update(skip_locked=True)]
        if not ids:
            return []
        MsgList.update(changes).where(MsgList.id.in_(ids)).execute()
        return list(MsgList.select().where(MsgList.id.in_(ids)))


def expire_overdue(db: Database, *, now: datetime) -> int:
    """Waiting rows past expire_at end 'fail' (expired) without being sent."""
    with db.atomic():
        return (
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
