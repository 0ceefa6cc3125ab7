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

import clock
from config import Retention
from db.heartbeat import forget_old
from db.models import FINISHED
from db.purge import purge_events, purge_status

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
