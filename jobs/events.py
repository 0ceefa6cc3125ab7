"""The events job: turn stored pushes into what Herald knows about rows and users.

push_event is an inbox: the receiver (web/push.py) stores WeChat's pushes and SMS
status reports; applications may insert grants they learnt from
wx.requestSubscribeMessage (source 'app', kind 'grant'). This job applies each event
once, in id order:

- subscribe_msg_sent_event / TEMPLATESENDJOBFINISH / sms_status: a receipt on the row
  whose msgid matches (as text): `delivered`, or `failed` with the code and status.
  Only a row of the event's app (the app the row was sent with: the official account
  for TEMPLATESENDJOBFINISH) whose openid is the event's user (for SMS: whose phone is
  the report's number) takes it; a receipt naming another app's or user's row is
  closed with the reason and changes nothing (a forged push cannot rewrite a receipt).
  A receipt that arrives before its send result is written (WeChat can be that fast)
  waits: it is looked at again at next_check_at, backing off (RECHECK_MIN doubling up
  to RECHECK_MAX), never on every run, so thousands waiting cost a run nothing; one
  that matches nothing for RECEIPT_PATIENCE (another system's message) is closed.
- subscribe_msg_popup_event accept/reject, subscribe_msg_change_event reject, an
  application's grant: the grant ledger; an accept also releases rows held for it
  (grants.on_missing: hold).

A run applies the new events (next_check_at NULL) in id order, then the rechecks that
are due, each part bounded (max_pages x limit events). Both `run` (a scheduled job)
and `serve` (woken after each stored push) apply events; on PostgreSQL and MySQL they
skip each other's locked rows, on SQLite the single writer keeps them apart. One
malformed event, or one holding a value the database cannot take (a NUL, a lone
surrogate, an over-long id), is closed with its error and costs nothing else.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from peewee import Database

import clock
from db import inbox
from db.grants import record_grant, release_held
from db.inbox import MSGID_MAX, OPENID_MAX, TEMPLATE_ID_MAX, unstorable
from db.outcomes import clean
from logs import redact

log = logging.getLogger("herald.events")

BATCH = 500
RECEIPT_PATIENCE = timedelta(hours=1)
# A receipt waiting for its row is looked at again after about its age, at least
# RECHECK_MIN, at most RECHECK_MAX: 5 s, 10 s, 20 s ... 10 min, then closed after an hour.
RECHECK_MIN = timedelta(seconds=5)
RECHECK_MAX = timedelta(minutes=10)
RECHECK_PAGES = 4  # pages of due rechecks per run, after the new events
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
    examined: int = 0  # events looked at in this run (new and rechecked)
    rechecked: int = 0  # of them, receipts whose next look was due
    per_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.receipts + self.grants + self.failed + self.other


class EventError(ValueError):
    """This event cannot be applied; it is closed with the reason."""


class Pending(Exception):
    """This receipt's row has no matching msgid yet: try again later."""


def apply_pending(db: Database, *, now: datetime, templates: Any = None,
                  limit: int = BATCH, daemon_id: str | None = None,
                  max_pages: int = 20, recheck_pages: int = RECHECK_PAGES) -> Applied:
    """Apply the new events in id order (at most `max_pages` pages of `limit`), then
    the receipts whose recheck is due (at most `recheck_pages` pages), a transaction
    per page: a run's work is bounded however many wait."""
    done = Applied()
    for due, pages in ((False, max_pages), (True, recheck_pages)):
        for _ in range(pages):
            seen = _apply_page(db, done, now, templates, limit, daemon_id, due=due)
            if seen < limit:
                break
    if done.total or done.pending:
        log.info("events applied: %d receipts, %d grants (%d rows released), %d pending, "
                 "%d refused", done.receipts, done.grants, done.released, done.pending,
                 done.failed)
    return done


class Row(NamedTuple):
    """A msg_list row a receipt may be about."""

    id: int
    app: str  # the app it was sent with (its own, else its template's, else default)
    openid: str
    phone: str


Known = dict[str, list[Row]]  # msgid (SMS: sid) -> the rows that have it


def _apply_page(db: Database, done: Applied, now: datetime, templates: Any, limit: int,
                daemon_id: str | None, *, due: bool) -> int:
    with db.atomic():
        # due: receipts waiting for their row, whose next look has come; else new
        # events, in the order they came (an accept, then a reject)
        rows = inbox.unapplied(db, now=now, limit=limit, due=due)
        known = _rows_by_msgid(db, rows, templates)
        waiting: dict[datetime, list[int]] = {}  # next_check_at -> event ids
        for event_id, app, source, kind, openid, payload, received_at in rows:
            done.examined += 1
            done.rechecked += int(due)
            error: str | None = None
            try:
                if kind in RECEIPT_KINDS and not _receipt_ready(kind, payload, known):
                    raise Pending()
                with db.savepoint():
                    what = _apply_one(db, app or "default", str(source), str(kind), openid,
                                      payload, now, templates, daemon_id, known)
            except Pending:
                if _older_than(received_at, now, RECEIPT_PATIENCE):
                    error = "no row has this msgid (another system's message, or purged)"
                else:
                    done.pending += 1
                    waiting.setdefault(_next_check(received_at, now), []).append(
                        int(event_id))
                    continue
            except EventError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the inbox
                log.warning("push_event %s (%s): %s", event_id, _text(kind, 64),
                            _text(redact(str(exc)), 200))
                error = f"could not be applied: {type(exc).__name__}"
            else:
                for name, n in what.items():
                    setattr(done, name, getattr(done, name) + n)
                done.per_kind[str(kind)] = done.per_kind.get(str(kind), 0) + 1
            if error is not None:
                done.failed += 1
            inbox.close(db, event_id, now, _text(error, 300) if error else None)
        for at, ids in waiting.items():  # one statement per distinct next look
            inbox.look_again(db, at, ids)
    return len(rows)


def _text(value: object, limit: int) -> str:
    """Text for a column or a log line whatever `value` holds: no secret, no NUL, no
    lone surrogate (no engine stores those), bounded."""
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    return clean(text, limit)


def _next_check(received_at: object, now: datetime) -> datetime:
    """About the receipt's age from now (so looks double), within RECHECK_MIN..MAX."""
    from db.decode import ts_or_none

    at = ts_or_none(received_at)
    age = now - at if at is not None else RECHECK_MIN
    return now + min(RECHECK_MAX, max(RECHECK_MIN, age))


def _id_ok(value: object) -> bool:
    return isinstance(value, str) and bool(value) and unstorable(value, MSGID_MAX) is None


def _receipt_ids(kind: object, payload: object) -> list[str]:
    """The msgids (SMS: sids) a receipt event is about that a row could hold; [] when it
    names none (it then fails as malformed, or for its unstorable id)."""
    try:
        data = json.loads(str(payload))
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    if kind == "sms_status":
        sid = data.get("sid")
        return [sid] if isinstance(sid, str) and _id_ok(sid) else []
    items = data.get("items")
    if not isinstance(items, list):
        return []
    return [i["msgid"] for i in items if isinstance(i, dict) and _id_ok(i.get("msgid"))]


def _rows_by_msgid(db: Database, rows: list[tuple], templates: Any) -> Known:
    """The rows every receipt of this page is about, in one query per 500 msgids."""
    wanted = sorted({m for r in rows if r[3] in RECEIPT_KINDS for m in _receipt_ids(r[3], r[5])})
    found: Known = {}
    for msgid, row_id, app, template, openid, phone in inbox.rows_with_msgids(db, wanted):
        found.setdefault(str(msgid), []).append(Row(
            int(row_id), _sending_app(app, template, templates), str(openid or "").strip(),
            str(phone or "")))
    return found


def _sending_app(app: object, template: object, templates: Any) -> str:
    """The app a row was sent with: its own, else its template's, else default (as
    dispatch renders it)."""
    if isinstance(app, str) and app:
        return app
    if templates is not None and isinstance(template, str):
        try:
            tpl = templates.current.lookup(template.strip())
        except Exception:  # noqa: BLE001 - a template since removed: the row's own app
            tpl = None
        if tpl is not None and getattr(tpl, "app", None):
            return str(tpl.app)
    return "default"


def _receipt_ready(kind: object, payload: object, known: Known) -> bool:
    """Every msgid of the receipt has its row (or it names none: it fails as malformed)."""
    ids = _receipt_ids(kind, payload)
    return all(m in known for m in ids)


def _older_than(value: object, now: datetime, age: timedelta) -> bool:
    from db.decode import ts_or_none

    at = ts_or_none(value)
    return at is None or now - at > age


def _json(payload: object) -> dict[str, Any]:
    if hasattr(payload, "raw"):  # SQLite text another program wrote as raw bytes
        raise EventError("payload is not UTF-8")
    try:
        data = json.loads(str(payload))
    except (ValueError, RecursionError):
        raise EventError("payload is not JSON") from None
    if not isinstance(data, dict):
        raise EventError("payload is not a JSON object")
    return data


def _apply_one(db: Database, app: str, source: str, kind: str, openid: Any,
               payload: object, now: datetime, templates: Any, daemon_id: str | None,
               known: Known) -> dict[str, int]:
    data = _json(payload)
    if kind in RECEIPT_KINDS:
        return _receipts(db, app, kind, openid, data, now, daemon_id, known)
    if kind in ("subscribe_msg_popup_event", "subscribe_msg_change_event"):
        _check_user(openid, "no openid")
        counts = {"grants": 0, "released": 0}
        items = []
        for item in _items(data):
            tid, status = item.get("template_id"), item.get("status")
            if not isinstance(tid, str) or not tid:
                continue
            if status not in GRANT_RESULTS:
                continue  # a status Herald does not know: keep the event, change nothing
            _check_template_id(tid)
            items.append((tid, str(status)))
        for tid, status in items:  # every value checked before the first write
            counts["grants"] += 1
            counts["released"] += _grant(db, app, openid, tid, status, now, templates)
        return counts
    if source == "app" and kind == "grant":
        _check_user(openid, "an app grant needs openid")
        results = _app_results(data)
        counts = {"grants": 0, "released": 0}
        for tid, result in results.items():
            counts["grants"] += 1
            counts["released"] += _grant(db, app, openid, tid, result, now, templates)
        return counts
    return {"other": 1}


def _check_user(openid: object, missing: str) -> None:
    if not isinstance(openid, str) or not openid:
        raise EventError(missing)
    if (why := unstorable(openid, OPENID_MAX)) is not None:
        raise EventError(f"openid {why}")


def _check_template_id(tid: str) -> None:
    if (why := unstorable(tid, TEMPLATE_ID_MAX)) is not None:
        raise EventError(f"template_id {why}")


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
        _check_template_id(tid)
        return {tid: str(result)}
    out = {k: str(v) for k, v in data.items()
           if k != "errMsg" and isinstance(k, str) and len(k) <= 128 and v in GRANT_RESULTS}
    if not out:
        raise EventError("no template results (give template_id and result)")
    for tid in out:
        _check_template_id(tid)
    return out


def _grant(db: Database, app: str, openid: str, template_id: str, result: str,
           now: datetime, templates: Any) -> int:
    record_grant(db, app, openid, template_id, result, now)
    if result != "accept":
        return 0
    names = {template_id}
    if templates is not None:
        names |= {t.name for t in templates.current.templates.values()
                  if t.template_id == template_id}
    return release_held(db, app, openid, names, now)


def _receipts(db: Database, app: str, kind: str, openid: object,
              data: dict[str, Any], now: datetime, daemon_id: str | None,
              known: Known) -> dict[str, int]:
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
    targets: list[tuple[list[Row], bool, str, datetime]] = []
    for msgid, ok, why, at in marks:  # every check before the first write
        if (bad := unstorable(msgid, MSGID_MAX)) is not None:
            raise EventError(f"{'sid' if kind == 'sms_status' else 'MsgID'} {bad}: no row "
                             "can hold it")
        found = known.get(msgid)
        if not found:
            raise Pending()
        mine = [r for r in found if _is_recipient(r, app, kind, openid, data)]
        if not mine:
            raise EventError(_not_theirs(found, app, kind))
        targets.append((mine, ok, why, at))
    applied = 0
    for mine, ok, why, at in targets:
        state = "delivered" if ok else "failed"
        for row in mine:
            inbox.set_receipt(db, row.id, state=state, error=None if ok else _text(why, 300),
                              at=at, now=now, detail=_text(f"{state}: {why} ({kind})", 300),
                              daemon_id=daemon_id)
            applied += 1
    return {"receipts": applied}


def _digits(value: object) -> str:
    return re.sub(r"[^0-9]", "", value) if isinstance(value, str) else ""


def _is_recipient(row: Row, app: str, kind: str, openid: object,
                  data: dict[str, Any]) -> bool:
    """Whether the receipt is about this row: for WeChat, pushed to the app the row was
    sent with, by the row's user; for SMS, about the row's phone number."""
    if kind == "sms_status":
        mobile, phone = _digits(data.get("mobile")), _digits(row.phone)
        return bool(mobile) and phone in (_digits(data.get("nationcode")) + mobile, mobile)
    return row.app == app and isinstance(openid, str) and bool(openid) and \
        row.openid == openid.strip()


def _not_theirs(rows: list[Row], app: str, kind: str) -> str:
    ids = ", ".join(f"#{r.id}" for r in rows[:5])
    if kind == "sms_status":
        return f"the report's phone number is not the one of row {ids}: not applied"
    return (f"the receipt (app {app}) is not for row {ids}: another app's or another "
            "user's message; not applied")


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
    stored, and every `every` seconds for what applications insert themselves and the
    receipts whose recheck is due."""

    def __init__(self, ctx: Any, *, every: float | None = None,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.ctx = ctx
        self.every = every if every is not None else ctx.config.jobs["events"].every
        self.now = now
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

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
            try:
                with self.ctx.db.connection_context():
                    apply_pending(self.ctx.db, now=self.now(), templates=self.ctx.templates,
                                  daemon_id=self.ctx.daemon_id)
                self.runs += 1
            except Exception as exc:  # noqa: BLE001 - the next wake-up tries again
                log.warning("applying events failed: %s", _text(redact(str(exc)), 200))


def run(rt: Any, *, now: Callable[[], datetime] = clock.now) -> Applied:
    """The scheduled job of `run`."""
    return apply_pending(rt.db, now=now(), templates=rt.templates, daemon_id=rt.daemon_id)


__all__ = ["Applied", "Applier", "apply_pending", "run"]
