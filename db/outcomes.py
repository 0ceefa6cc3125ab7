"""Write the results of sends back onto their rows.

Results are written in groups, one short transaction per group, because a
per-row transaction costs a disk sync (SQLite) or a round trip (servers) each.
Every update checks the row is still ours: status 'sending', our claimed_by and the
attempts count of our claim. A slow daemon whose lease ran out (and whose row
another daemon has since claimed) writes nothing; recorded() reports that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.models import MsgList

ERROR_MAX = 1000  # the error column is for people: keep it readable, bounded


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed row.

    status: 'success' | 'fail' | 'wait' (back in the queue at send_at).
    refund_attempt: the attempt did not count (quota deferral, token retry).
    """

    row_id: int
    claim_attempts: int  # attempts as set by our claim: part of the ownership check
    status: str
    errcode: int | None = None
    error: str | None = None
    msgid: str | None = None
    send_at: datetime | None = None
    refund_attempt: bool = False


def record(db: Database, outcomes: Iterable[Outcome], *, daemon_id: str, now: datetime) -> int:
    """Apply outcomes in one transaction. Returns how many rows were still ours."""
    written = 0
    items = list(outcomes)
    if not items:
        return 0
    with db.atomic():
        for o in items:
            changes: dict = {
                MsgList.status: o.status,
                MsgList.errcode: o.errcode,
                MsgList.error: o.error[:ERROR_MAX] if o.error else o.error,
                MsgList.updated_at: now,
                MsgList.lease_until: None,
            }
            if o.status == "success":
                changes[MsgList.msgid] = o.msgid
                changes[MsgList.sent_at] = now
            elif o.status == "wait":
                changes[MsgList.claimed_by] = None
                if o.send_at is not None:
                    changes[MsgList.send_at] = o.send_at
            if o.refund_attempt:
                changes[MsgList.attempts] = MsgList.attempts - 1
            written += (
                MsgList.update(changes)
                .where(
                    (MsgList.id == o.row_id)
                    & (MsgList.status == "sending")
                    & (MsgList.claimed_by == daemon_id)
                    & (MsgList.attempts == o.claim_attempts)
                )
                .execute()
            )
    return written
