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
from db.dialects import dialect
from db.models import MsgList
from db.outcomes import EVENT_COLUMNS
from runtime import Runtime

log = logging.getLogger("herald.stale_retry")

BATCH = 1000
LOST = "lease expired while sending (the daemon holding it stopped)"
MAYBE_SENT = f"{LOST}; on_stale: fail, so not resent: WeChat may or may not have delivered it"
NEVER_SENT = f"{LOST} before its send started; back to wait"
RESENDING = f"{LOST}; resending (on_stale: retry: a duplicate is possible)"


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
    # A row 'sending' with no lease at all was never claimed by Herald (every claim sets
    # one): another program wrote it so. No daemon will ever renew it, so it is stale
    # now; otherwise it would sit in 'sending' forever.
    stale = (MsgList.status == "sending") & ((MsgList.lease_until < t)
                                             | MsgList.lease_until.is_null())
    d = dialect(rt.db)
    with rt.db.atomic():
        # locked: a late result cannot land between this read and the updates below
        rows = list(d.for_update(MsgList.select(MsgList.id, MsgList.claimed_by,
                                                MsgList.attempts, MsgList.started_at)
                                 .where(stale).order_by(MsgList.id).limit(BATCH)))
        if not rows:
            return 0
        holders = sorted({r.claimed_by or "?" for r in rows})
        fail_mode = cfg.dispatch.on_stale == "fail"
        groups: dict[str, list[int]] = {"spent": [], "maybe": [], "never": [], "retry": []}
        for r in rows:
            if fail_mode and r.started_at is None:
                groups["never"].append(r.id)  # refunded: never reached a send
            elif r.attempts >= max_attempts:
                groups["spent"].append(r.id)
            elif fail_mode:
                groups["maybe"].append(r.id)
            else:
                groups["retry"].append(r.id)
        common = {MsgList.lease_until: None, MsgList.updated_at: t}
        changes = {
            "spent": {MsgList.status: "fail",
                      MsgList.error: f"gave up after {max_attempts} attempts: {LOST}", **common},
            "maybe": {MsgList.status: "fail", MsgList.error: MAYBE_SENT, **common},
            "never": {MsgList.status: "wait", MsgList.send_at: t, MsgList.claimed_by: None,
                      MsgList.attempts: MsgList.attempts - 1, MsgList.error: NEVER_SENT,
                      **common},
            "retry": {MsgList.status: "wait", MsgList.send_at: t, MsgList.claimed_by: None,
                      MsgList.error: RESENDING, **common},
        }
        recovered: list[tuple[int, str]] = []
        for name, ids in groups.items():
            if not ids:
                continue
            # the stale condition is repeated: a row finished meanwhile is left alone
            MsgList.update(changes[name]).where(stale & MsgList.id.in_(ids)).execute()
            recovered += [(i, name) for i in ids]
        stamp = d.ts(t)
        detail = {"spent": "lease expired; attempts spent", "maybe": "lease expired after "
                  "its send started", "never": "lease expired before its send started",
                  "retry": "lease expired; back to wait"}
        d.insert_many(rt.db.cursor(), "msg_event", EVENT_COLUMNS, [
            (i, stamp, "stale", None, None, detail[name], rt.daemon_id)
            for i, name in recovered])
    counts = {name: len(ids) for name, ids in groups.items() if ids}
    log.warning("%d rows had an expired lease (held by %s): %s", len(rows), ", ".join(holders),
                ", ".join(f"{n} {what}" for what, n in (
                    ("failed (attempts spent)", counts.get("spent", 0)),
                    ("failed (may have been delivered)", counts.get("maybe", 0)),
                    ("back to wait (never sent)", counts.get("never", 0)),
                    ("back to wait", counts.get("retry", 0))) if n))
    return len(rows)
