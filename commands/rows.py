"""The verbs that write or list rows: enqueue, list, cancel, retry.

They only touch the database, so they run without the apps' credentials. retry and
cancel go through db/ops.py, the code path the console's buttons use too: the same
rows are chosen and refused for the same reasons, each change leaves a line in the
row's history, and every id asked for by name that is left alone is reported with
the reason.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from peewee import IntegrityError

import clock
from commands import human
from commands.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    VerbError,
    actor,
    err,
    load,
    open_queue,
    out,
    parse_when,
)
from commands.render import Refused, judge, templates_of
from config import ConfigError, parse_duration
from db import ops, rows
from db.decode import text_or_shown, ts_or_none
from db.queue import HELD_PREFIXES

LIST_MAX = 1000
SHOW_IDS = 20  # ids listed in a summary line before "..."


def _ids(ids: list[int]) -> str:
    head = ", ".join(str(i) for i in ids[:SHOW_IDS])
    return head + (f" ... ({len(ids) - SHOW_IDS} more)" if len(ids) > SHOW_IDS else "")


# ----------------------------------------------------------------- enqueue


def cmd_enqueue(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    try:
        json.loads(args.params)
    except ValueError as exc:
        err(f"--params is not valid JSON: {exc}")
        return EXIT_USAGE
    send_at = parse_when(args.send_at, "--send-at")
    expire_at = parse_when(args.expire_at, "--expire-at")
    sized: tuple[tuple[str | None, str], ...] = (
        (args.template, "template"), (args.openid, "openid"), (args.app, "app"),
        (args.dedup_key, "dedup_key"), (args.phone, "phone"),
        (args.collapse_key, "collapse_key"))
    for text, column in sized:
        limit = rows.max_length(column)
        if text is not None and limit and len(text) > limit:
            err(f"refused: {column} is {len(text)} characters, at most {limit}")
            return EXIT_USAGE
    tset = templates_of(cfg)
    try:
        judge(cfg, tset, template=args.template, openid=args.openid, params=args.params,
              page=args.page, app=args.app, phone=args.phone, expire_at=expire_at)
    except Refused as exc:
        err(f"refused: {exc}")
        err("(dispatch would fail this row; nothing was inserted)")
        return EXIT_USAGE
    if send_at is not None and expire_at is not None and expire_at <= send_at:
        err("refused: --expire-at is not after --send-at: the row would expire unsent")
        return EXIT_USAGE
    values: dict[str, Any] = {"template": args.template, "openid": args.openid,
                              "params": args.params, "priority": args.priority}
    for field, value in (("send_at", send_at), ("expire_at", expire_at), ("app", args.app),
                         ("page", args.page), ("dedup_key", args.dedup_key),
                         ("phone", args.phone), ("collapse_key", args.collapse_key)):
        if value is not None:
            values[field] = value
    db = open_queue(cfg)
    try:
        with db.connection_context():
            row_id = rows.insert(db, values)
    except IntegrityError:
        if args.dedup_key is None:
            raise
        err(f"refused by the database: dedup_key {args.dedup_key!r} is taken already "
            "(UNIQUE: a second insert with the same key is rejected)")
        return EXIT_RUNTIME
    due = send_at or clock.now()  # (the column's default: now)
    extra = "".join(f", {name} {value}" for name, value in (
        ("expire_at", human.stamp(expire_at) if expire_at else None),
        ("dedup_key", args.dedup_key), ("collapse_key", args.collapse_key),
        ("priority", args.priority or None)) if value)
    print(f"queued #{row_id}: template {args.template}, openid {args.openid}, "
          f"app {args.app or 'default'}, send_at {human.when(due, clock.now())}{extra}")
    return EXIT_OK


# ----------------------------------------------------------------- list


def _since(text: str | None) -> datetime | None:
    return parse_when(text, "--since", past=True)


def _note(status: str, send_at: datetime | None, error: str | None, msgid: str | None,
          now: datetime) -> str:
    """A few words on where the row stands (show ID tells the whole story)."""
    if status == "wait":
        if send_at is None:
            return "send_at unreadable"
        if send_at <= now:
            return "due now"
        what = "retry" if (error or "").startswith("will retry") else (
            "held" if any((error or "").startswith(p) for p, _ in HELD_PREFIXES) else "send")
        return f"{what} {human.relative(send_at, now)}"
    if status == "success":
        return f"msgid {msgid}" if msgid else "sent"
    return human.cut(error or "", 70)


def cmd_list(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    if not 1 <= args.limit <= LIST_MAX:
        err(f"--limit: {args.limit} is not between 1 and {LIST_MAX}")
        return EXIT_USAGE
    since = _since(args.since)
    db = open_queue(cfg)
    now = clock.now()
    with db.connection_context():
        raw = rows.listing(db, limit=args.limit, status=args.status, template=args.template,
                           app=args.app, openid=args.openid, since=since,
                           before_id=args.before_id)
    found = []
    for rid, status, app, template, openid, attempts, send_at, created, error, msgid in raw:
        st = text_or_shown(status) or "?"
        found.append({"id": int(rid), "status": st, "app": text_or_shown(app),
                      "template": text_or_shown(template), "openid": text_or_shown(openid),
                      "attempts": attempts, "created_at": ts_or_none(created),
                      "send_at": ts_or_none(send_at), "error": text_or_shown(error),
                      "msgid": text_or_shown(msgid)})
    if args.json:
        print(json.dumps([{k: human.iso(v) if isinstance(v, datetime) else v
                           for k, v in r.items()} for r in found], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not found:
        out("no rows match")
        return EXIT_OK
    out(f"{'id':>8}  {'status':<9} {'app':<8} {'template':<22} {'openid':<18} {'tries':>5}  "
        f"{'created':<12} note")
    for r in found:
        created = human.relative(r["created_at"], now) if r["created_at"] else "?"
        out(f"{r['id']:>8}  {r['status']:<9} {(r['app'] or 'default'):<8} "
            f"{human.cut(r['template'] or '', 22):<22} {human.cut(r['openid'] or '', 18):<18} "
            f"{r['attempts'] if r['attempts'] is not None else '?':>5}  {created:<12} "
            f"{_note(r['status'], r['send_at'], r['error'], r['msgid'], now)}".rstrip())
    if len(found) == args.limit:
        out(f"(newest {args.limit} shown; older: add --before-id {found[-1]['id']})")
    return EXIT_OK


# ----------------------------------------------------------------- cancel and retry


def _seconds(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text, name)
    except ConfigError as exc:
        raise VerbError("; ".join(exc.problems), EXIT_USAGE) from None


def _report(verb: str, done: str, report: ops.Report, *, dry_run: bool) -> int:
    rows = human.plural(len(report.changed), "row")
    if dry_run:
        out(f"would {verb} {rows}" + (f": {_ids(report.changed)}" if report.changed else ""))
    else:
        out(f"{done} {rows}" + (f": {_ids(report.changed)}" if report.changed else ""))
    if report.skipped:
        out(f"left {human.plural(len(report.skipped), 'row')} alone:")
        for rid, why in sorted(report.skipped.items()):
            out(f"  {rid}: {why}")
        return EXIT_RUNTIME  # not everything asked for by name was done
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    sel = ops.Selection(ids=tuple(args.ids), template=args.template, app=args.app,
                        openid=args.openid)
    if sel.empty:
        err("cancel: name the rows: ids, --template, --openid (or --app): only waiting "
            "rows are cancelled")
        return EXIT_USAGE
    cfg = load(args, credentials=False)
    db = open_queue(cfg, current=True)
    now = clock.now()
    with db.connection_context():
        report = ops.cancel(db, sel, now=now, dry_run=args.dry_run, actor=actor())
        # filters also match rows on their way out right now: say so (named ids say it
        # in their own reason)
        sending = ops.count(db, sel, "sending", now=now) if not sel.ids else 0
    code = _report("cancel", "cancelled", report, dry_run=args.dry_run)
    if sending:
        out(f"left {human.plural(sending, 'matching row')} that "
            f"{'is' if sending == 1 else 'are'} being sent now: "
            f"{ops.CANCEL_REASONS['sending']}")
    return code


def cmd_retry(args: argparse.Namespace) -> int:
    sel = ops.Selection(ids=tuple(args.ids), errcode=args.errcode, template=args.template,
                        app=args.app, openid=args.openid,
                        within=_seconds(args.failed_within, "--failed-within"),
                        before=_seconds(args.failed_before, "--failed-before"),
                        every=args.all)
    if sel.empty:
        err("retry: name the rows: ids, --errcode, --template, --app, --openid, "
            "--failed-within, --failed-before, or --all for every failed row")
        return EXIT_USAGE
    cfg = load(args, credentials=False)
    db = open_queue(cfg, current=True)
    with db.connection_context():
        report = ops.retry(db, sel, now=clock.now(), dry_run=args.dry_run, actor=actor())
    code = _report("re-drive", "re-drove", report, dry_run=args.dry_run)
    if report.changed and not args.dry_run:
        out("(back to wait with attempts reset: the next dispatch run sends them)")
    return code


__all__ = ["cmd_cancel", "cmd_enqueue", "cmd_list", "cmd_retry"]
