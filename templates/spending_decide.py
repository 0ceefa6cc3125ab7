"""The pre-send decisions that spend grants well: collapse windows, send windows and
per-user caps (the template keys of spending.py; docs/grants.md).

Dispatch asks decide() about the rows it just claimed and rendered, before the grant
check and before any send. A row may go, wait (back to `wait` with its send_at moved to
when it may go, the attempt given back, a history line saying why: nothing is held in
memory), or fail. A row whose expire_at comes before it could go fails now, `expired`:
expire_at still wins.

Caps. At most N successful sends of a template (or cap_group) to one openid of one app
in any window of `per`. Counted in one statement (db/spending.cap_count): the sends
that succeeded inside the window, plus the rows any daemon holds in `sending` right
now, plus the rows this decision already let through. Within one daemon this is exact.
Across daemons sharing a database it never lets more than N through: each daemon
counts after its own claim committed, so of two daemons deciding at once at least one
sees the other's row in `sending` and counts it (both may then wait: the row that
waits because of a send in flight looks again after CAP_RECHECK, as that send may
still fail; so does a row behind sends this run itself let through).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from config.values import seconds_text
from db import spending as spending_db
from db.decode import Row, keyed
from templates.model import Template, TemplateSet
from templates.spending import CAPPED, group_members
from templates.spending import zone as find_zone

CAP_RECHECK = timedelta(minutes=1)  # a row capped by sends still in flight looks again


@dataclass(frozen=True, slots=True)
class Ask:
    """A claimed, rendered row: what the decisions need of it."""

    row: Row
    template: Template
    app: str
    recipient: str


@dataclass(frozen=True, slots=True)
class Hold:
    """Back to wait until `until` (UTC); error: the row's error column; detail: history."""

    until: datetime
    error: str
    detail: str
    why: str  # send_window | collapse_window | capped


@dataclass(frozen=True, slots=True)
class Fail:
    error: str
    reason_code: str | None  # `capped` (a fallback may follow), None: expired (none does)


Decision = Hold | Fail | None


def _stamp(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def _expired_first(row: Row, until: datetime, what: str) -> Fail | None:
    if row.expire_at is not None and row.expire_at <= until:
        return Fail(f"expired: expire_at {_stamp(row.expire_at)} comes before {what} "
                    f"({_stamp(until)})", None)
    return None


def timing(row: Row, tpl: Template, now: datetime, zone_name: str) -> Decision:
    """The collapse window and the send window of one row (no database)."""
    rules = tpl.spend
    created = getattr(row, "created_at", None)  # a KeyedRow's (db/decode.py)
    if rules.collapse_window and row.collapse_key and created is not None:
        ready = created + timedelta(seconds=rules.collapse_window)
        if ready > now:
            return _expired_first(row, ready, "its collapse window ends") or Hold(
                ready, f"{spending_db.HELD_COLLAPSE} of {rules.collapse_window:g}s after "
                f"created_at (newer rows with collapse_key {row.collapse_key!r} supersede "
                f"it); waits until {_stamp(ready)}",
                f"collapse window: waits until {_stamp(ready)}", "collapse_window")
    window = rules.send_window
    if window is not None:
        zone = find_zone(zone_name)
        if not window.is_open(now.astimezone(zone)):
            opens = window.next_opening(now, zone)
            return _expired_first(row, opens, "the send window opens") or Hold(
                opens, f"{spending_db.HELD_WINDOW} {window} ({zone_name}) is closed; waits "
                f"until it opens at {_stamp(opens)}",
                f"send window {window} ({zone_name}) closed: waits until {_stamp(opens)}",
                "send_window")
    return None


def decide(db: object, tset: TemplateSet, jobs: Sequence[Ask], now: datetime,
           zone_name: str) -> list[Decision]:
    """One decision per job, in order (None: it may go)."""
    out: list[Decision] = [timing(j.row, j.template, now, zone_name) for j in jobs]
    capped = [i for i, j in enumerate(jobs) if out[i] is None and j.template.spend.cap]
    if capped:
        _caps(db, tset, jobs, capped, out, now)
    return out


def _caps(db: object, tset: TemplateSet, jobs: Sequence[Ask], which: Iterable[int],
          out: list[Decision], now: datetime) -> None:
    members = {n: (t.spend, t.template_id) for n, t in tset.templates.items()}
    exclude = [j.row.id for j in jobs]
    seen: dict[tuple[str, str, str], tuple[spending_db.CapCount, int]] = {}
    for i in which:
        job = jobs[i]
        cap = job.template.spend.cap
        assert cap is not None
        key = (job.app, job.recipient, cap.group)
        if key not in seen:
            names = group_members(members, cap.group) or [job.template.name]
            counted = spending_db.cap_count(
                db, app=job.app, openid=job.recipient, templates=names,  # type: ignore[arg-type]
                since=now - timedelta(seconds=cap.per), exclude=exclude)
            seen[key] = (counted, 0)
        counted, admitted = seen[key]
        total = len(counted.sent) + counted.in_flight + admitted
        if total < cap.max:
            seen[key] = (counted, admitted + 1)
            continue
        text = (f"{total} sends of {cap.group!r} to this user in the last "
                f"{seconds_text(cap.per)} (per_user max {cap.max})")
        if cap.on_cap == "fail":
            out[i] = Fail(f"{CAPPED}: {text}", CAPPED)
            continue
        leave = total - cap.max + 1  # sends that must leave the window to make room
        if leave <= len(counted.sent):
            until = counted.sent[leave - 1] + timedelta(seconds=cap.per)
        else:
            # behind sends still in flight, another daemon's or this run's own: any of
            # them may fail and leave room, so look again soon; once they succeeded, the
            # next look finds their sent_at and waits until the oldest leaves the window
            until = now + CAP_RECHECK
        out[i] = _expired_first(job.row, until, "the cap lets it through") or Hold(
            until, f"{spending_db.HELD_CAP}: {text}; waits until {_stamp(until)}",
            f"capped ({text}): waits until {_stamp(until)}", "capped")


def explain(db: object, tset: TemplateSet, ask: Ask, now: datetime, zone_name: str
            ) -> str | None:
    """What would hold this row if it were claimed now (for `render`): superseded, a
    collapse or send window, a cap; None when nothing would. Reads, changes nothing."""
    row = ask.row
    if row.collapse_key is not None and row.id:
        newest, created = spending_db.newest_with_key(db, row.id)  # type: ignore[arg-type]
        if newest is not None:
            return f"would be cancelled: {spending_db.SUPERSEDED}{newest} (same collapse_key)"
        row = keyed(row, created)
    decision = decide(db, tset, [replace(ask, row=row)], now, zone_name)[0]
    if isinstance(decision, Hold):
        return f"would wait until {_stamp(decision.until)}: {decision.error}"
    if isinstance(decision, Fail):
        return f"would fail: {decision.error}"
    return None


__all__ = ["CAP_RECHECK", "Ask", "explain", "Decision", "Fail", "Hold", "decide", "timing"]
