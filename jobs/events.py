"""The events job: turn stored pushes into what Herald knows about rows and users.

push_event is an inbox: the receiver (web/push.py) stores WeChat's pushes and SMS
status reports; applications may insert grants they learnt from
wx.requestSubscribeMessage (source 'app', kind 'grant'). This job applies each event
once, in id order:

- subscribe_msg_sent_event / TEMPLATESENDJOBFINISH / sms_status: a receipt on the row
  whose msgid matches (as text): `delivered`, or `failed` with the code and status. A
  receipt that arrives before its send result is written (WeChat can be that fast)
  stays pending and is applied when the row has its msgid; one that matches nothing
  for RECEIPT_PATIENCE (another system's message) is closed with a reason.
- subscribe_msg_popup_event accept/reject, subscribe_msg_change_event reject, an
  application's grant: the grant ledger; an accept also releases rows held for it
  (grants.on_missing: hold).

Both `run` (a scheduled job) and `serve` (woken after each stored push) apply events;
on PostgreSQL and MySQL they skip each other's locked rows, on SQLite the single
writer keeps them apart. One malformed event is closed with its error and costs nothing
else.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from peewee import Database

import clock
from db.dialects import dialect
from db.grants import record_grant, release_held
from db.outcomes import EVENT_COLUMNS, clean
from logs import redact

log = logging.getLogger("herald.events")

BATCH = 500
RECEIPT_PATIENCE = timedelta(hours=1)
RECHECK = 10.0  # seconds between looks at receipts still waiting for their row
RECEIPT_KINDS = ("subscribe_msg_sent_event", "TEMPLATESENDJOBFINISH", "sms_status")
GRANT_RESULTS = ("accept", "reject", "ban")
BEIJING = timezone(timedelta(hours=8))  # Tencent Cloud reports user_receive_time in it


@dataclass
class Applied:
    receipts: int = 0
    grants: int = 0
    released: int = 0
    pending: int = 0  # receipts waiting for their row's msgid
    failed: int = 0  # events closed with an error
    other: int = 0  # events Herald keeps but does not act on
    per_kind: dict[str, int] = field(default_factory=dict)
    high_water: int = 0  # the highest push_event id looked at

    @property
    def total(self) -> int:
        return self.receipts + self.grants + self.failed + self.other


class EventError(ValueError):
    """This event cannot be applied; it is closed with the reason."""


class Pending(Exception):
    """This receipt's row has no matching msgid yet: try again later."""


def apply_pending(db: Database, *, now: datetime, templates: Any = None,
                  limit: int = BATCH, daemon_id: str | None = None,
                  max_pages: int = 20, after: int = 0) -> Applied:
    """Apply the unapplied events with an id above `after`, `limit` per transaction, in
    id order. Receipts still waiting for their row are stepped over, so they never hold
    up what comes after; `done.high_water` is the last id looked at."""
    done = Applied()
    done.high_water = after
    for _ in range(max_pages):
        seen, done.high_water = _apply_page(db, done, done.high_water, now, templates,
                                            limit, daemon_id)
        if seen < limit:
            break
    if done.total:
        log.info("events applied: %d receipts, %d grants (%d rows released), %d pending, "
                 "%d refused", done.receipts, done.grants, done.released, done.pending,
                 done.failed)
    return done


def _apply_page(db: Database, done: Applied, after: int, now: datetime, templates: Any,
                limit: int, daemon_id: str | None) -> tuple[int, int]:
    d = dialect(db)
    p = d.param
    with db.atomic():
        sql = ("SELECT id, app, source, kind, openid, payload, received_at FROM push_event "
               f"WHERE applied_at IS NULL AND id > {p} ORDER BY id LIMIT {int(limit)}")
        if d.name != "sqlite":
            sql += " FOR UPDATE SKIP LOCKED"
        rows = db.execute_sql(sql, (after,)).fetchall()
        known = _rows_by_msgid(db, d, rows)
        for event_id, app, source, kind, openid, payload, received_at in rows:
            after = max(after, int(event_id))
            error: str | None = None
            try:
                if kind in RECEIPT_KINDS and not _receipt_ready(kind, payload, known):
                    raise Pending()
                with db.savepoint():
                    what = _apply_one(db, d, app or "default", str(source), str(kind), openid,
                                      payload, now, templates, daemon_id, known)
            except Pending:
                if _older_than(received_at, now, RECEIPT_PATIENCE):
                    error = "no row has this msgid (another system's message, or purged)"
                else:
                    done.pending += 1
                    continue
            except EventError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the inbox
                log.warning("push_event %s (%s): %s", event_id, kind, redact(str(exc))[:200])
                error = f"could not be applied: {type(exc).__name__}"
            else:
                for name, n in what.items():
                    setattr(done, name, getattr(done, name) + n)
                done.per_kind[str(kind)] = done.per_kind.get(str(kind), 0) + 1
            if error is not None:
                done.failed += 1
            db.execute_sql(f"UPDATE push_event SET applied_at = {p}, error = {p} WHERE id = {p}",
                           (d.ts(now), clean(error, 300) if error else None, event_id))
    return len(rows), after


def _receipt_ids(kind: object, payload: object) -> list[str]:
    """The msgids (SMS: sids) a receipt event is about; [] when it names none."""
    try:
        data = json.loads(str(payload))
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    if kind == "sms_status":
        sid = data.get("sid")
        return [sid[:32]] if isinstance(sid, str) and sid else []
    items = data.get("items")
    if not isinstance(items, list):
        return []
    return [i["msgid"][:32] for i in items
            if isinstance(i, dict) and isinstance(i.get("msgid"), str) and i["msgid"]]


def _rows_by_msgid(db: Database, d: Any, rows: list[tuple]) -> dict[str, list[int]]:
    """The rows every receipt of this page is about, in one query: msgid -> row ids."""
    wanted = sorted({m for r in rows if r[3] in RECEIPT_KINDS for m in _receipt_ids(r[3], r[5])})
    found: dict[str, list[int]] = {}
    p = d.param
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        cur = db.execute_sql(f"SELECT msgid, id FROM msg_list WHERE msgid IN "
                             f"({', '.join([p] * len(chunk))})", chunk)
        for msgid, row_id in cur.fetchall():
            found.setdefault(str(msgid), []).append(int(row_id))
    return found


def _receipt_ready(kind: object, payload: object, known: dict[str, list[int]]) -> bool:
    """Every msgid of the receipt has its row (or it names none: it fails as malformed)."""
    ids = _receipt_ids(kind, payload)
    return all(m in known for m in ids)


def _older_than(value: object, now: datetime, age: timedelta) -> bool:
    from db.decode import ts_or_none

    at = ts_or_none(value)
    return at is None or now - at > age


def _json(payload: object) -> dict[str, Any]:
    try:
        data = json.loads(str(payload))
    except (ValueError, RecursionError):
        raise EventError("payload is not JSON") from None
    if not isinstance(data, dict):
        raise EventError("payload is not a JSON object")
    return data


def _apply_one(db: Database, d: Any, app: str, source: str, kind: str, openid: Any,
               payload: object, now: datetime, templates: Any, daemon_id: str | None,
               known: dict[str, list[int]]) -> dict[str, int]:
    data = _json(payload)
    if kind in RECEIPT_KINDS:
        return _receipts(db, d, kind, data, now, daemon_id, known)
    if kind in ("subscribe_msg_popup_event", "subscribe_msg_change_event"):
        if not isinstance(openid, str) or not openid:
            raise EventError("no openid")
        counts = {"grants": 0, "released": 0}
        for item in _items(data):
            tid, status = item.get("template_id"), item.get("status")
            if not isinstance(tid, str) or not tid:
                continue
            if status not in GRANT_RESULTS:
                continue  # a status Herald does not know: keep the event, change nothing
            counts["grants"] += 1
            counts["released"] += _grant(db, app, openid, tid, str(status), now, templates)
        return counts
    if source == "app" and kind == "grant":
        if not isinstance(openid, str) or not openid:
            raise EventError("an app grant needs openid")
        results = _app_results(data)
        counts = {"grants": 0, "released": 0}
        for tid, result in results.items():
            counts["grants"] += 1
            counts["released"] += _grant(db, app, openid, tid, result, now, templates)
        return counts
    return {"other": 1}


def _items(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("items")
    if not isinstance(items, list):
        raise EventError("no items")
    return [i for i in items if isinstance(i, dict)]


def _app_results(data: dict[str, Any]) -> dict[str, str]:
    """{"template_id": T, "result": accept} or wx.requestSubscribeMessage's own result
    object {T: "accept", T2: "reject", "errMsg": "..."}."""
    if "template_id" in data:
        tid, result = data.get("template_id"), data.get("result")
        if not isinstance(tid, str) or not tid or len(tid) > 128:
            raise EventError("template_id is missing or not a string")
        if result not in GRANT_RESULTS:
            raise EventError(f"result must be one of {', '.join(GRANT_RESULTS)}")
        return {tid: str(result)}
    out = {k: str(v) for k, v in data.items()
           if k != "errMsg" and isinstance(k, str) and len(k) <= 128 and v in GRANT_RESULTS}
    if not out:
        raise EventError("no template results (give template_id and result)")
    return out


def _grant(db: Database, app: str, openid: str, template_id: str, result: str,
           now: datetime, templates: Any) -> int:
    record_grant(db, app, openid, template_id[:128], result, now)
    if result != "accept":
        return 0
    names = {template_id}
    if templates is not None:
        names |= {t.name for t in templates.current.templates.values()
                  if t.template_id == template_id}
    return release_held(db, app, openid, names, now)


def _receipts(db: Database, d: Any, kind: str, data: dict[str, Any], now: datetime,
              daemon_id: str | None, known: dict[str, list[int]]) -> dict[str, int]:
    if kind == "sms_status":
        sid = data.get("sid")
        if not isinstance(sid, str) or not sid:
            raise EventError("no sid")
        ok = str(data.get("report_status", "")).upper() == "SUCCESS"
        why = " ".join(str(data.get(k)) for k in ("errmsg", "description") if data.get(k))
        at = _beijing(data.get("user_receive_time")) or now
        marks = [(sid, ok, why or ("DELIVRD" if ok else "FAIL"), at)]
    else:
        marks = []
        for item in _items(data):
            msgid = item.get("msgid")
            if not isinstance(msgid, str) or not msgid:
                continue
            code, status = item.get("error_code"), item.get("error_status")
            ok = (code == 0 or code is None) and str(status or "success").lower() == "success"
            why = f"ErrorCode {code}: {status}" if not ok else str(status or "success")
            marks.append((msgid, ok, why, now))
        if not marks:
            raise EventError("no MsgID in the receipt")
    p = d.param
    applied = 0
    for msgid, ok, why, at in marks:
        found = known.get(msgid[:32])
        if not found:
            raise Pending()
        state = "delivered" if ok else "failed"
        for row_id in found:
            db.execute_sql(f"UPDATE msg_list SET receipt = {p}, receipt_error = {p}, "
                           f"receipt_at = {p} WHERE id = {p}",
                           (state, None if ok else clean(why, 300), d.ts(at), row_id))
            d.insert_many(db.cursor(), "msg_event", EVENT_COLUMNS, [
                (row_id, d.ts(now), "receipt", None, None,
                 clean(f"{state}: {why} ({kind})", 300), daemon_id)])
            applied += 1
    return {"receipts": applied}


def _beijing(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        local = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return local.replace(tzinfo=BEIJING).astimezone(UTC)


class Applier:
    """Applies events in a thread of its own (serve): at once when woken after a push is
    stored, and every `every` seconds for what applications insert themselves."""

    def __init__(self, ctx: Any, *, every: float | None = None,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.ctx = ctx
        self.every = every if every is not None else ctx.config.jobs["events"].every
        self.now = now
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.high_water = 0  # new events are those above it
        self._rechecked = 0.0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every)
            self._wake.clear()
            if self._stop.is_set():
                return
            # a wake-up (a push was stored) looks at what is new; every RECHECK seconds
            # the whole inbox is looked at again (receipts waiting for their row, and
            # rows applications inserted out of id order)
            mono = time.monotonic()
            after = self.high_water
            if mono - self._rechecked >= RECHECK:
                after, self._rechecked = 0, mono
            try:
                with self.ctx.db.connection_context():
                    done = apply_pending(self.ctx.db, now=self.now(),
                                         templates=self.ctx.templates,
                                         daemon_id=self.ctx.daemon_id, after=after)
                self.high_water = max(self.high_water, done.high_water)
                self.runs += 1
            except Exception as exc:  # noqa: BLE001 - the next wake-up tries again
                log.warning("applying events failed: %s", redact(str(exc))[:200])


def run(rt: Any, *, now: Callable[[], datetime] = clock.now) -> Applied:
    """The scheduled job of `run`."""
    return apply_pending(rt.db, now=now(), templates=rt.templates, daemon_id=rt.daemon_id)


__all__ = ["Applied", "Applier", "apply_pending", "run"]
