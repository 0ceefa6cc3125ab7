"""`render`, and the row check `enqueue` shares with it: a row judged as dispatch would.

Dispatch decides a claimed row in this order: unreadable column, expire_at passed,
render (template, params, keyword rules, openid), then the app (configured, and the
right kind for the template's channel). judge() runs the same steps with the same
functions (templates.render_row and channels.app_problem), so `render` fails
exactly where a send would, and `enqueue` refuses exactly the rows dispatch would fail.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

import channels
import clock
from commands.common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, VerbError, err, load, out
from config import Config
from db.claim import EXPIRED
from db.decode import BadRow, decode_claimed
from db.rows import claimed_form
from templates import LoadContext, RenderError, Request, TemplateError, TemplateSet, render_row
from templates import load_templates as _load_templates


class Refused(Exception):
    """The row would end fail without a send; the message is dispatch's reason."""


def templates_of(cfg: Config) -> TemplateSet:
    """templates.yaml as the daemon loads it (with the config for channel checks)."""
    try:
        return _load_templates(cfg.templates, context=LoadContext(
            config=cfg, base_dir=cfg.templates.parent))
    except TemplateError as exc:
        raise VerbError(str(exc), EXIT_USAGE) from None


def app_problem(cfg: Config, app: str, request: Request) -> str | None:
    """Dispatch's own app check (channels.app_problem)."""
    return channels.app_problem(cfg.apps, app, request.template)


def judge(cfg: Config, tset: TemplateSet, *, template: str | None, openid: str | None,
          params: Any, page: str | None = None, app: str | None = None,
          phone: str | None = None, row_id: int | None = None,
          expire_at: datetime | None = None, now: datetime | None = None) -> Request:
    """The request dispatch would send for these values, or Refused with its reason."""
    now = now or clock.now()
    if expire_at is not None and expire_at <= now:
        raise Refused(EXPIRED)
    try:
        req = render_row(tset, template=template, openid=openid, params=params, page=page,
                         app=app, row_id=row_id, phone=phone)
    except RenderError as exc:
        raise Refused(exc.reason) from None
    problem = app_problem(cfg, req.app or "default", req)
    if problem:
        raise Refused(problem)
    return req


def read_row(db: Any, row_id: int) -> Any:
    """One row decoded as dispatch decodes a claimed row (Row, BadRow or None)."""
    raw = claimed_form(db, row_id)
    return None if raw is None else decode_claimed(raw)


def show_request(cfg: Config, req: Request) -> None:
    """The request as it would go out; the token is never shown."""
    target = req.built.target or "POST"
    method, _, path = target.partition(" ")
    if req.built.token_app:
        out(f"{method} {cfg.api_base}{path}?access_token=<token of app {req.built.token_app}>")
    else:
        out(target)
    out(f"template {req.template.name} (channel {req.template.channel}), "
        f"app {req.app or 'default'}")
    out(json.dumps(req.body, ensure_ascii=False, indent=2))
    if req.truncated:
        out(f"note: truncated to the channel's limit: {', '.join(req.truncated)}")


def cmd_render(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    tset = templates_of(cfg)
    fields: dict[str, Any]
    if args.id is not None:
        from commands.common import open_queue

        db = open_queue(cfg, current=True)
        with db.connection_context():
            row = read_row(db, args.id)
        if row is None:
            err(f"no row with id {args.id}")
            return EXIT_RUNTIME
        if isinstance(row, BadRow):
            err(f"would fail: unreadable row: {row.reason}")
            return EXIT_RUNTIME
        fields = {"template": row.template, "openid": row.openid, "params": row.params,
                  "page": row.page, "app": row.app, "phone": row.phone, "row_id": row.id,
                  "expire_at": row.expire_at}
        if row.status != "wait":
            out(f"note: row {row.id} is {row.status}; this is what a send of it would be")
    else:
        if not args.template:
            err("render: give a row id, or --template with --params (and --openid, --app)")
            return EXIT_USAGE
        try:
            json.loads(args.params)
        except ValueError as exc:
            err(f"--params is not valid JSON: {exc}")
            return EXIT_USAGE
        fields = {"template": args.template, "openid": args.openid, "params": args.params,
                  "page": args.page, "app": args.app, "phone": args.phone}
    try:
        req = judge(cfg, tset, **fields)
    except Refused as exc:
        err(f"would fail: {exc}")
        return EXIT_RUNTIME
    keyed = args.id is not None and row.collapse_key is not None
    if req.template.spend.any or keyed:  # said first: the request's JSON stays the last thing out
        note = _spending_note(cfg, tset, req, row if args.id is not None else None)
        if note:
            out(f"note: {note}")
    show_request(cfg, req)
    return EXIT_OK


def _spending_note(cfg: Config, tset: TemplateSet, req: Request, row: Any) -> str | None:
    """What a collapse, send window or cap would do to this row now (templates/spending_decide.py).
    Without a row (--template): the send window only."""
    from templates import spending_decide as spend

    now = clock.now()
    if row is None:
        decision = spend.timing(_bare_row(now), req.template, now, cfg.timezone)
        if isinstance(decision, spend.Hold):
            return f"a row sent now would wait until the window opens: {decision.error}"
        return None
    from commands.common import open_queue

    db = open_queue(cfg, current=True)
    with db.connection_context():
        return spend.explain(db, tset, spend.Ask(row, req.template, req.app or "default",
                                                 req.recipient), now, cfg.timezone)


def _bare_row(now: datetime) -> Any:
    from db.decode import Row

    return Row(id=0, attempts=0, template="", app=None, openid="", phone=None, params="[]",
               page=None, priority=0, send_at=now, expire_at=None, dedup_key=None,
               errcode=None, error=None, parent_id=None, status="wait", claimed_by=None,
               lease_until=None, updated_at=None, collapse_key=None)


__all__ = ["Refused", "app_problem", "cmd_render", "judge", "read_row", "show_request",
           "templates_of"]
