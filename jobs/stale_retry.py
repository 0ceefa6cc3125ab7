"""The stale_retry job: take back rows whose daemon died while it held them.

A row stays 'sending' only while its lease runs; a live daemon renews the leases of
the rows it holds. Past lease_until its daemon is presumed dead (crashed, killed,
lost its database):

- on_stale: retry (at-least-once): the row goes back to 'wait'. WeChat may already
  have delivered it, so a duplicate is possible.
- on_stale: fail (at-most-once): a row whose send may have started (started_at set
  for this claim) ends 'fail'; a row that never reached a send goes back to 'wait'
  with its attempt refunded, since nobody can have received it.

A row that has used all its attempts ends 'fail' either way, so a row that crashes
the daemon every time cannot crash it forever. The daemon that held a row can no
longer write its result: outcomes check claimed_by and attempts. Each recovered row
gets a line in its history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import clock
from db.stale import BATCH, LOST, MAYBE_SENT, NEVER_SENT, RESENDING, recover_batch
from runtime import Runtime

log = logging.getLogger("herald.stale_retry")

__all__ = ["BATCH", "LOST", "MAYBE_SENT", "NEVER_SENT", "RESENDING", "run"]


def run(rt: Runtime, *, now: Callable[[], datetime] = clock.now) -> int:
    """Recover rows with an expired lease. Returns how many were recovered."""
    total = 0
    while True:
        n = _recover_batch(rt, now())
        total += n
        if n < BATCH:
            return total


def _recover_batch(rt: Runtime, t: datetime) -> int:
    cfg = rt.config
    found = recover_batch(rt.db, t, max_attempts=cfg.retry.max_attempts,
                          fail_mode=cfg.dispatch.on_stale == "fail", daemon_id=rt.daemon_id)
    if not found.rows:
        return 0
    counts = found.counts
    log.warning("%d rows had an expired lease (held by %s): %s", found.rows,
                ", ".join(found.holders),
                ", ".join(f"{n} {what}" for what, n in (
                    ("failed (attempts spent)", counts.get("spent", 0)),
                    ("failed (may have been delivered)", counts.get("maybe", 0)),
                    ("back to wait (never sent)", counts.get("never", 0)),
                    ("back to wait", counts.get("retry", 0))) if n))
    return found.rows
