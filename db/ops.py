"""What an operator does to rows: re-drive failed ones, cancel waiting ones.

One code path for the `retry` and `cancel` verbs and the console's buttons, so both
select the same rows, refuse the same rows for the same reasons, and leave the same
line in each row's history (who did it). A dry run counts and lists without changing
anything. Each id asked for by name that is not changed is reported with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peewee import Database

from db.dialects import dialect
from db.models import MsgList
from db.outcomes import EVENT_COLUMNS, clean

CHUNK = 500


@dataclass(frozen=True)
class Selection:
    """Which rows: ids, and/or filters; every filter given must match."""

    ids: tuple[int, ...] = ()
    errcode: int | None = None
    template: str | None = None
    app: str | None = None
    openid: str | None = None
    within: float | None = None  # seconds: changed in the last ...
    before: float | None = None  # seconds: changed more than ... ago
    every: bool = False  # no filter at all: every row of the eligible status

    @property
    def empty(self) -> bool:
        return not (self.ids or self.errcode is not None or self.template or self.app
                    or self.openid or self.within or self.before or self.every)


@dataclass
class Report:
    changed: list[int] = field(default_factory=list)  # (or would be, on a dry run)
    skipped: dict[int, str] = field(default_factory=dict)  # id -> why it was left
    dry_run: bool = False


def _where(sel: Selection, status: str, now: datetime):
    cond = MsgList.status == status
    if sel.ids:
        cond &= MsgList.id.in_(list(sel.ids))
    if sel.errcode is not None:
        cond &= MsgList.errcode == sel.errcode
    if sel.template:
        cond &= MsgList.template == sel.template
    if sel.app:
        same_app = MsgList.app == sel.app
        if sel.app == "default":
            same_app |= MsgList.app.is_null()  # rows with app NULL use the default app
        cond &= same_app
    if sel.openid:
        cond &= MsgList.openid == sel.openid
    if sel.within:
        cond &= MsgList.updated_at >= now - timedelta(seconds=sel.within)
    if sel.before:
        cond &= MsgList.updated_at <= now - timedelta(seconds=sel.before)
    return cond


def _why_not(db: Database, ids: Sequence[int], wanted: str, reasons: dict[str, str]
             ) -> dict[int, str]:
    """Why each asked-for id is not among the eligible rows."""
    found = {r.id: r.status for r in MsgList.select(MsgList.id, MsgList.status)
             .where(MsgList.id.in_(list(ids))).execute(db)}
    out: dict[int, str] = {}
    for i in ids:
        status = found.get(i)
        if status is None:
            out[i] = "no such row"
        elif status != wanted:
            out[i] = f"status {status}: {reasons.get(status, 'not ' + wanted)}"
        else:
            out[i] = "does not match the other filters"
    return out


def _apply(db: Database, sel: Selection, status: str, changes: dict, *, now: datetime,
           dry_run: bool, event: tuple[str, str], actor: str, reasons: dict[str, str]
           ) -> Report:
    report = Report(dry_run=dry_run)
    d = dialect(db)
    with db.atomic():
        cond = _where(sel, status, now)
        ids = [r.id for r in MsgList.select(MsgList.id).where(cond).order_by(MsgList.id)
               .execute(db)]
        if sel.ids:
            missing = [i for i in sel.ids if i not in set(ids)]
            if missing:
                report.skipped = _why_not(db, missing, status, reasons)
        if dry_run:
            report.changed = ids
            return report
        stamp = d.ts(now)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            # the status is checked again: a row that changed meanwhile is left alone
            MsgList.update(changes).where(cond & MsgList.id.in_(chunk)).execute(db)
            kind, detail = event
            d.insert_many(db.cursor(), "msg_event", EVENT_COLUMNS, [
                (i, stamp, kind, None, None, clean(f"{detail} by {actor}"), None)
                for i in chunk])
        report.changed = ids
    return report


RETRY_REASONS = {
    "wait": "it is waiting already",
    "sending": "it is being sent now",
    "success": "it was delivered; retry re-drives failed rows only",
    "cancelled": "it was cancelled",
}
CANCEL_REASONS = {
    "sending": "it is being sent now (a cancel now would come too late)",
    "success": "it was delivered already",
    "fail": "it has failed already",
    "cancelled": "it is cancelled already",
}


def retry(db: Database, sel: Selection, *, now: datetime, dry_run: bool = False,
          actor: str = "cli") -> Report:
    """Failed rows back to wait, attempts reset, due now."""
    changes = {
        MsgList.status: "wait", MsgList.attempts: 0, MsgList.send_at: now,
        MsgList.claimed_by: None, MsgList.lease_until: None, MsgList.started_at: None,
        MsgList.updated_at: now, MsgList.error: None, MsgList.errcode: None,
    }
    return _apply(db, sel, "fail", changes, now=now, dry_run=dry_run,
                  event=("retry", "re-driven"), actor=actor, reasons=RETRY_REASONS)


def count(db: Database, sel: Selection, status: str, *, now: datetime) -> int:
    """How many rows of `status` the selection's filters match (what a verb left alone:
    e.g. rows being sent now, which a cancel would come too late for)."""
    return int(MsgList.select().where(_where(sel, status, now)).count(db))


def cancel(db: Database, sel: Selection, *, now: datetime, dry_run: bool = False,
           actor: str = "cli") -> Report:
    """Waiting rows to cancelled (Herald never sends them)."""
    changes = {MsgList.status: "cancelled", MsgList.updated_at: now,
               MsgList.error: clean(f"cancelled by {actor} at {now:%Y-%m-%d %H:%M:%S} UTC")}
    return _apply(db, sel, "wait", changes, now=now, dry_run=dry_run,
                  event=("cancel", "cancelled"), actor=actor, reasons=CANCEL_REASONS)


__all__ = ["CANCEL_REASONS", "RETRY_REASONS", "Report", "Selection", "cancel", "count",
           "retry"]
