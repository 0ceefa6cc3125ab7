"""Taking back rows whose daemon died while it held them (jobs/stale_retry.py runs
it): which rows are stale, what each becomes, and the line in its history, in one
transaction that holds the rows it changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.dialects import dialect
from db.models import MsgList
from db.outcomes import EVENT_COLUMNS

BATCH = 1000
LOST = "lease expired while sending (the daemon holding it stopped)"
MAYBE_SENT = f"{LOST}; on_stale: fail, so not resent: WeChat may or may not have delivered it"
NEVER_SENT = f"{LOST} before its send started; back to wait"
RESENDING = f"{LOST}; resending (on_stale: retry: a duplicate is possible)"


@dataclass(frozen=True)
class Recovered:
    rows: int  # how many stale rows the batch found
    holders: list[str]  # the daemons that held them
    counts: dict[str, int]  # spent, maybe, never, retry -> rows


def recover_batch(db: Database, t: datetime, *, max_attempts: int, fail_mode: bool,
                  daemon_id: str) -> Recovered:
    """Up to BATCH rows whose lease ran out by `t`, each failed or back to wait."""
    # A row 'sending' with no lease at all was never claimed by Herald (every claim sets
    # one): another program wrote it so. No daemon will ever renew it, so it is stale
    # now; otherwise it would sit in 'sending' forever.
    stale = (MsgList.status == "sending") & ((MsgList.lease_until < t)
                                             | MsgList.lease_until.is_null())
    d = dialect(db)
    with db.atomic():
        # locked: a late result cannot land between this read and the updates below
        rows = list(d.for_update(MsgList.select(MsgList.id, MsgList.claimed_by,
                                                MsgList.attempts, MsgList.started_at)
                                 .where(stale).order_by(MsgList.id).limit(BATCH))
                    .execute(db))
        if not rows:
            return Recovered(0, [], {})
        holders = sorted({r.claimed_by or "?" for r in rows})
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
            MsgList.update(changes[name]).where(stale & MsgList.id.in_(ids)).execute(db)
            recovered += [(i, name) for i in ids]
        stamp = d.ts(t)
        detail = {"spent": "lease expired; attempts spent", "maybe": "lease expired after "
                  "its send started", "never": "lease expired before its send started",
                  "retry": "lease expired; back to wait"}
        d.insert_many(db.cursor(), "msg_event", EVENT_COLUMNS, [
            (i, stamp, "stale", None, None, detail[name], daemon_id)
            for i, name in recovered])
    return Recovered(len(rows), holders,
                     {name: len(ids) for name, ids in groups.items() if ids})


__all__ = ["BATCH", "LOST", "MAYBE_SENT", "NEVER_SENT", "RESENDING", "Recovered",
           "recover_batch"]
