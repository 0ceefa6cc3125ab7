"""The stale_retry job: take back rows whose daemon died while sending them.

A row stays 'sending' only while its lease runs. Past lease_until its daemon is
presumed dead (crashed, killed, lost its database): the row goes back to 'wait'
(on_stale: retry, at-least-once: WeChat may already have delivered it, so a
duplicate is possible) or ends 'fail' (on_stale: fail, at-most-once), with a reason
that says which. A row that has used all its attempts ends 'fail' either way, so a
row that crashes the daemon every time cannot crash it forever. The daemon that
held a row can no longer write its result: outcomes check claimed_by and attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import clock
from db.models import MsgList
from runtime import Runtime

log = logging.getLogger("herald.stale_retry")

BATCH = 1000
LOST = "lease expired while sending (the daemon holding it stopped)"


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
    max_attempts = cfg.retry.max_attempts
    stale = (MsgList.status == "sending") & (MsgList.lease_until < t)
    with rt.db.atomic():
        rows = list(MsgList.select(MsgList.id, MsgList.claimed_by, MsgList.attempts)
                    .where(stale).order_by(MsgList.id).limit(BATCH))
        if not rows:
            return 0
        holders = sorted({r.claimed_by or "?" for r in rows})
        spent = [r.id for r in rows if r.attempts >= max_attempts]
        rest = [r.id for r in rows if r.attempts < max_attempts]
        common = {MsgList.lease_until: None, MsgList.updated_at: t}
        n = 0
        if spent:
            n += MsgList.update({
                MsgList.status: "fail",
                MsgList.error: f"gave up after {max_attempts} attempts: {LOST}",
                **common,
            }).where(stale & MsgList.id.in_(spent)).execute()
        if rest and cfg.dispatch.on_stale == "fail":
            n += MsgList.update({
                MsgList.status: "fail",
                MsgList.error: f"{LOST}; on_stale: fail, so not resent: WeChat may or may "
                               "not have delivered it",
                **common,
            }).where(stale & MsgList.id.in_(rest)).execute()
        elif rest:
            n += MsgList.update({
                MsgList.status: "wait",
                MsgList.send_at: t,
                MsgList.claimed_by: None,
                MsgList.error: f"{LOST}; resending (on_stale: retry: a duplicate is possible)",
                **common,
            }).where(stale & MsgList.id.in_(rest)).execute()
    # the stale condition is repeated in each UPDATE: a row finished meanwhile is left alone
    if n:
        log.warning("%d rows had an expired lease (held by %s): %s", n, ", ".join(holders),
                    "ended fail" if cfg.dispatch.on_stale == "fail" else "back to wait")
    return len(rows)
