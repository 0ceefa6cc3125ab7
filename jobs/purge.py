"""The purge job: delete finished rows older than their retention.

Retention is per final status (config `retention`: success, fail, cancelled; `forever`
keeps that status's rows) and is measured from updated_at, the moment the row finished,
not from when it was queued: a message scheduled a month ahead must not vanish the day
it is sent.

Deleting happens in small batches, each its own short transaction, so a purge of
millions of rows never holds a long lock that would stall dispatch (SQLite has one
writer) or bloat an undo log (MySQL). Each batch selects ids first, then deletes by
id: MySQL rejects LIMIT inside an IN subquery, and one code path for all engines is
easier to trust. The DELETE repeats the status and age filter, so a row re-driven
to wait (`scheduler.py retry`) between the two statements is never deleted; wait and
sending rows are out of reach by construction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from peewee import Database

import clock
from config import Retention
from db.heartbeat import forget_old
from db.models import FINISHED, MsgEvent, MsgList, PushEvent

log = logging.getLogger("herald.purge")


def run(rt: Any, *, now: Callable[[], datetime] = clock.now, batch: int = 1000
        ) -> dict[str, int]:
    """Delete expired finished rows; the number deleted per status.

    `rt` needs .config (for retention) and .db; a runtime.Runtime also brings
    .stopping, which ends the purge between batches so SIGTERM is not held up.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    at = now()
    retention: Retention = rt.config.retention
    stopping: threading.Event | None = getattr(rt, "stopping", None)
    deleted: dict[str, int] = {}
    transactions = 0
    keeps: dict[str, float | None] = {"success": retention.success, "fail": retention.fail,
                                      "cancelled": retention.cancelled}
    for status in FINISHED:
        keep = keeps[status]
        if keep is None:  # retention.<status>: forever
            deleted[status] = 0
            continue
        cutoff = at - timedelta(seconds=keep)
        count, txns = purge_status(rt.db, status, cutoff, batch=batch, stopping=stopping)
        deleted[status] = count
        transactions += txns
    keep_events = retention.events
    if keep_events is not None:
        inbox = purge_events(rt.db, at - timedelta(seconds=keep_events), batch=batch,
                             stopping=stopping)
        if inbox:
            log.info("purge: deleted %d applied push_event rows", inbox, extra={"job": "purge"})
    forget_old(rt.db, at)  # heartbeats of daemons gone for a day
    if any(deleted.values()):
        log.info("purge: deleted %s finished rows (%s) in %d transactions",
                 sum(deleted.values()),
                 ", ".join(f"{n} {s}" for s, n in deleted.items()), transactions,
                 extra={"job": "purge"})
    return deleted


def purge_status(db: Database, status: str, cutoff: datetime, *, batch: int,
                 stopping: threading.Event | None = None) -> tuple[int, int]:
    """Delete rows of one finished status with updated_at before `cutoff`.

    Returns (rows deleted, transactions used). Stops when a batch comes back short
    (nothing more is old enough) or `stopping` is set.
    """
    if status not in FINISHED:
        # the one guard that keeps the queue itself out of reach
        raise ValueError(f"purge only deletes finished rows ({', '.join(FINISHED)}), "
                         f"not {status!r}")
    expired = (MsgList.status == status) & (MsgList.updated_at < cutoff)
    total = transactions = 0
    while not (stopping is not None and stopping.is_set()):
        with db.atomic():
            transactions += 1
            ids = [r.id for r in MsgList.select(MsgList.id).where(expired).limit(batch)]
            if ids:
                total += MsgList.delete().where(MsgList.id.in_(ids) & expired).execute()
                # a row's history goes with it (a re-driven row kept its id: its
                # status filter above keeps it out of reach)
                kept = [r.id for r in MsgList.select(MsgList.id).where(MsgList.id.in_(ids))]
                MsgEvent.delete().where(MsgEvent.msg_id.in_(sorted(set(ids) - set(kept)))
                                        ).execute()
        if len(ids) < batch:
            break
    return total, transactions


def purge_events(db: Database, cutoff: datetime, *, batch: int,
                 stopping: threading.Event | None = None) -> int:
    """Delete applied push_event rows received before `cutoff` (unapplied ones stay:
    they still have something to tell)."""
    old = (PushEvent.received_at < cutoff) & PushEvent.applied_at.is_null(False)
    total = 0
    while not (stopping is not None and stopping.is_set()):
        with db.atomic():
            ids = [r.id for r in PushEvent.select(PushEvent.id).where(old).limit(batch)]
            if ids:
                total += PushEvent.delete().where(PushEvent.id.in_(ids) & old).execute()
        if len(ids) < batch:
            break
    return total
