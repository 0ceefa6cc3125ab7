"""The admin verbs of scheduler.py: init-db, schema, check, enqueue, status, render, retry.

Each takes parsed arguments and returns an exit code: 0 ok, 1 runtime failure,
2 bad usage or bad config. Output goes to stdout; problems to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from typing import Any

import clock
from config import Config, ConfigError, load_config, parse_duration
from db.connection import connect, ddl_text, init_schema
from db.models import STATUSES, MsgList
from db.queue import counts_by_status, oldest_due_wait, recent_failures
from logs import redact
from templates import RenderError, TemplateError, load_templates, render_row

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def err(msg: str) -> None:
    print(redact(msg), file=sys.stderr)


def safe_url(url: str) -> str:
    """A database URL fit for output: the password masked."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            cred = cred.split(":", 1)[0] + ":***"
        return f"{scheme}://{cred}@{host}"
    return url


def load(args: argparse.Namespace, *, credentials: bool = True) -> Config:
    """The config; credentials=False for verbs that only touch the database, which then
    run without the apps' secrets in the environment (DESIGN.md, operator verbs)."""
    return load_config(args.config, strict_secrets=credentials)


def parse_when(text: str | None, name: str) -> datetime | None:
    """An ISO time for --send-at/--expire-at; no offset means UTC; '+90s' style is relative."""
    if text is None:
        return None
    if text.startswith("+"):
        return clock.now() + timedelta(seconds=parse_duration(text[1:], name))
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=clock.now().tzinfo)
    return dt


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(ddl_text(args.dialect))
    return EXIT_OK


def cmd_init_db(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    db = connect(cfg.database)
    init_schema(db)
    print(f"msg_list and access_token ready in {safe_url(cfg.database)}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load(args)
    except ConfigError as exc:
        err(str(exc))
        return EXIT_USAGE
    try:
        tset = load_templates(cfg.templates)
    except TemplateError as exc:
        err(str(exc))
        return EXIT_USAGE
    problems = [
        f"{cfg.templates.name}: template {t.name}: app {t.app!r} is not configured "
        f"(configured: {', '.join(cfg.apps)})"
        for t in tset.templates.values()
        if t.app and t.app not in cfg.apps
    ]
    if problems:
        err("\n".join(problems))
        return EXIT_USAGE
    print(f"config ok: {cfg.path}")
    print(f"  database  {safe_url(cfg.database)}")
    print(f"  apps      {', '.join(f'{a.name} ({a.token_source})' for a in cfg.apps.values())}")
    print(f"  templates {len(tset.templates)} in {cfg.templates}: "
          f"{', '.join(tset.templates)}")
    for warning in cfg.warnings:  # valid but risky: said, never fatal
        err(f"warning: {warning}")
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    connect(cfg.database)
    params = args.params
    try:
        json.loads(params)
    except ValueError as exc:
        err(f"--params is not valid JSON: {exc}")
        return EXIT_USAGE
    values: dict[Any, Any] = {
        MsgList.template: args.template,
        MsgList.openid: args.openid,
        MsgList.params: params,
        MsgList.priority: args.priority,
    }
    for field, text, name in ((MsgList.send_at, args.send_at, "--send-at"),
                              (MsgList.expire_at, args.expire_at, "--expire-at")):
        try:
            when = parse_when(text, name)
        except (ValueError, ConfigError) as exc:
            err(f"{name}: {text!r} is not a time (ISO 8601, or +90s/+5m/+1h): {exc}")
            return EXIT_USAGE
        if when is not None:
            values[field] = when
    for field, value in ((MsgList.app, args.app), (MsgList.page, args.page),
                         (MsgList.dedup_key, args.dedup_key)):
        if value is not None:
            values[field] = value
    row_id = MsgList.insert(values).execute()
    print(row_id)
    return EXIT_OK


def status_report(now: datetime, failures: int = 10) -> dict[str, Any]:
    counts = counts_by_status()
    oldest = oldest_due_wait(now)
    return {
        "counts": counts,
        "oldest_due_wait_seconds": (now - oldest).total_seconds() if oldest else None,
        # decoded one by one (db/queue.py): a value another program wrote that cannot be
        # read is shown quoted; it never takes `status` down
        "recent_failures": recent_failures(failures),
    }


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    connect(cfg.database)
    report = status_report(clock.now(), args.failures)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return EXIT_OK
    counts = report["counts"]
    print("status     rows")
    for s in STATUSES:
        print(f"{s:<10} {counts[s]:>8}")
    age = report["oldest_due_wait_seconds"]
    print(f"oldest due waiting row: {'none' if age is None else f'{age:.0f}s old'}")
    if report["recent_failures"]:
        print("recent failures:")
        for f in report["recent_failures"]:
            print(f"  #{f['id']} {f['template']} errcode={f['errcode']}: {f['error']}")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    cfg = load(args)
    tset = load_templates(cfg.templates)
    if args.id is not None:
        connect(cfg.database)
        row = MsgList.get_or_none(MsgList.id == args.id)
        if row is None:
            err(f"no row with id {args.id}")
            return EXIT_RUNTIME
        fields = {"template": row.template, "openid": row.openid, "params": row.params,
                  "page": row.page, "app": row.app, "row_id": row.id}
    else:
        if not args.template:
            err("render: give a row id, or --template with --params and --openid")
            return EXIT_USAGE
        fields = {"template": args.template, "openid": args.openid, "params": args.params,
                  "page": args.page, "app": args.app}
    try:
        req = render_row(tset, **fields)
    except RenderError as exc:
        err(f"would fail: {exc.reason}")
        return EXIT_RUNTIME
    print(f"POST {cfg.api_base}/cgi-bin/message/subscribe/send?access_token=<token of app "
          f"{req.app or 'default'}>")
    print(json.dumps(req.body, ensure_ascii=False, indent=2))
    if req.truncated:
        print(f"note: truncated to WeChat's limit: {', '.join(req.truncated)}")
    return EXIT_OK



def retry_filter(args: argparse.Namespace, now: datetime):
    """The WHERE clause of `retry`: failed rows matching every filter given."""
    cond = MsgList.status == "fail"
    if args.ids:
        cond &= MsgList.id.in_(args.ids)
    if args.errcode is not None:
        cond &= MsgList.errcode == args.errcode
    if args.template:
        cond &= MsgList.template == args.template
    if args.failed_within:
        cond &= MsgList.updated_at >= now - timedelta(
            seconds=parse_duration(args.failed_within, "--failed-within"))
    if args.failed_before:
        cond &= MsgList.updated_at <= now - timedelta(
            seconds=parse_duration(args.failed_before, "--failed-before"))
    return cond


def cmd_retry(args: argparse.Namespace) -> int:
    if not (args.ids or args.errcode is not None or args.template or args.failed_within
            or args.failed_before or args.all):
        err("retry: name the rows: ids, --errcode, --template, --failed-within, "
            "--failed-before, or --all for every failed row")
        return EXIT_USAGE
    cfg = load(args, credentials=False)
    db = connect(cfg.database)
    now = clock.now()
    try:
        cond = retry_filter(args, now)
    except ConfigError as exc:
        err(str(exc))
        return EXIT_USAGE
    with db.atomic():
        ids = [r.id for r in MsgList.select(MsgList.id).where(cond).order_by(MsgList.id)]
        if args.dry_run:
            shown = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
            print(f"would re-drive {len(ids)} failed rows{': ' + shown if ids else ''}")
            return EXIT_OK
        n = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            n += MsgList.update({
                MsgList.status: "wait",
                MsgList.attempts: 0,
                MsgList.send_at: now,
                MsgList.claimed_by: None,
                MsgList.lease_until: None,
                MsgList.updated_at: now,
                MsgList.error: None,
                MsgList.errcode: None,
            }).where(cond & MsgList.id.in_(chunk)).execute()
    print(f"re-drove {n} failed rows: back to wait, attempts reset")
    return EXIT_OK
