"""Quota holds: WeChat said an app's quota on a channel is spent, so every daemon on the
database holds that app's sends on that channel until the quota comes back.

45009 (the daily quota) holds until retry.daily_quota_reset, 45011 (the per-minute
quota) until the next minute (policy.quota_wait). Dispatch publishes a hold the moment
it records the answer, and reads the table at the start of each run and every few
seconds while a run lasts (never per row): the table holds one row per app and
channel, the latest hold, so a read is a handful of rows. `herald holds --lift` ends a
hold early, recording who did, and makes the rows the hold had deferred due now.

A row another program wrote that cannot be read is skipped (it holds nothing), never
an error that would stop dispatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from peewee import Database

from db.decode import text_or_shown, ts_or_none
from db.dialects import dialect
from db.outcomes import EVENT_COLUMNS, clean

# the start of the error a quota deferral writes (policy.quota_wait's reasons)
DEFERRED = "deferred to the next "
CHUNK = 500


@dataclass(frozen=True)
class Hold:
    app: str
    channel: str
    until: datetime
    reason: str | None
    set_by: str | None
    set_at: datetime | None
    lifted_by: str | None = None
    lifted_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.lifted_at is None and self.until > now


@dataclass(frozen=True)
class New:
    """A hold a daemon has just seen (the answer of one send)."""

    app: str
    channel: str
    until: datetime
    reason: str


COLUMNS = "app, channel, held_until, reason, set_by, set_at, lifted_by, lifted_at"


def read(db: Database) -> list[Hold]:
    """Every row, lifted and past ones included (one per app and channel)."""
    out = []
    for app, channel, until, reason, set_by, set_at, lifted_by, lifted_at in db.execute_sql(
            f"SELECT {COLUMNS} FROM quota_hold").fetchall():
        held_until = ts_or_none(until)
        if held_until is None or not isinstance(app, str) or not isinstance(channel, str):
            continue  # unreadable: it holds nothing
        out.append(Hold(app, channel, held_until, text_or_shown(reason),
                        text_or_shown(set_by), ts_or_none(set_at), text_or_shown(lifted_by),
                        ts_or_none(lifted_at)))
    out.sort(key=lambda h: (h.app, h.channel))
    return out


def active(db: Database, now: datetime) -> list[Hold]:
    return [h for h in read(db) if h.active(now)]


def publish(db: Database, new: Sequence[New], *, who: str, now: datetime) -> None:
    """Store holds a daemon saw, in one short transaction. A hold in force that lasts
    longer is kept (a 45011 does not shorten a 45009 another daemon stored); a lifted
    or past one is replaced."""
    if not new:
        return
    d = dialect(db)
    p = d.param
    insert = d.insert_ignore("quota_hold", [c.strip() for c in COLUMNS.split(",")],
                             "app, channel")
    update = (f"UPDATE quota_hold SET held_until = {p}, reason = {p}, set_by = {p}, "
              f"set_at = {p}, lifted_by = NULL, lifted_at = NULL "
              f"WHERE app = {p} AND channel = {p} "
              f"AND NOT (lifted_at IS NULL AND held_until >= {p})")
    stamp = d.ts(now)
    with db.atomic():
        for h in new:
            until, reason = d.ts(h.until), clean(h.reason)
            db.execute_sql(insert, (h.app, h.channel, until, reason, who, stamp, None, None))
            db.execute_sql(update, (until, reason, who, stamp, h.app, h.channel, until))


@dataclass
class Lifted:
    holds: list[Hold]
    released: int  # waiting rows the holds had deferred, now due


def lift(db: Database, app: str, channel: str | None, *, who: str, now: datetime,
         templates: Iterable[str] | None = None) -> Lifted:
    """End the app's holds in force (on one channel, or all) now, recorded as lifted by
    `who`; the waiting rows they had deferred (a quota deferral's error, send_at up to
    the hold's end) become due now, each with a line in its history. `templates`: only
    rows naming these (the channel's templates, by name or template_id)."""
    d = dialect(db)
    p = d.param
    stamp = d.ts(now)
    names = sorted(set(templates)) if templates is not None else None
    with db.atomic():
        found = [h for h in active(db, now)
                 if h.app == app and (channel is None or h.channel == channel)]
        released = 0
        for h in found:
            db.execute_sql(f"UPDATE quota_hold SET lifted_by = {p}, lifted_at = {p} "
                           f"WHERE app = {p} AND channel = {p}", (who, stamp, h.app, h.channel))
            released += _release(db, h, who=who, stamp=stamp, names=names)
    return Lifted(found, released)


def release(db: Database, h: Hold, *, who: str, now: datetime,
            templates: Iterable[str] | None = None) -> int:
    """The waiting rows `h` deferred, due now (a daemon that deferred rows under a hold
    it did not know was lifted puts them back). How many."""
    with db.atomic():
        return _release(db, h, who=h.lifted_by or who, stamp=dialect(db).ts(now),
                        names=sorted(set(templates)) if templates is not None else None)


def _release(db: Database, h: Hold, *, who: str, stamp: object, names: list[str] | None
             ) -> int:
    d = dialect(db)
    p = d.param
    where = (f"status = 'wait' AND send_at > {p} AND send_at <= {p} AND error LIKE {p} "
             + ("AND (app = {p} OR app IS NULL)" if h.app == "default" else "AND app = {p}")
             .format(p=p))
    params: list[object] = [stamp, d.ts(h.until), DEFERRED + "%", h.app]
    if names is not None:
        if not names:
            return 0
        where += f" AND template IN ({', '.join([p] * len(names))})"
        params += names
    lock = d.lock_rows  # (SQLite: BEGIN IMMEDIATE)
    ids = [int(r[0]) for r in db.execute_sql(f"SELECT id FROM msg_list WHERE {where}{lock}",
                                             params).fetchall()]
    note = clean(f"quota hold on {h.channel} lifted by {who}: due now")
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        marks = ", ".join([p] * len(chunk))
        db.execute_sql(f"UPDATE msg_list SET send_at = {p}, updated_at = {p} "
                       f"WHERE id IN ({marks})", (stamp, stamp, *chunk))
        d.insert_many(db.cursor(), "msg_event", EVENT_COLUMNS,
                      [(i, stamp, "hold", h.channel, None, note, None) for i in chunk])
    return len(ids)


__all__ = ["DEFERRED", "Hold", "Lifted", "New", "active", "lift", "publish", "read",
           "release"]
