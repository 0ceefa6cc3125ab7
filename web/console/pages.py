"""The pages people read. Each handler checks its inputs, reads through messages.py,
ledger.py or the overview cache, and renders one template; none changes anything."""

from __future__ import annotations

import json
import re
from typing import Any

import clock
import keywords
from db import holds
from templates import Template, TemplateError, load_templates, render_row
from web.console import inputs, ledger, messages
from web.console.chart import sends_svg
from web.console.http import Req, context, html
from web.console.inputs import BadInput, NotFound
from web.console.parts import ConsoleParts
from web.wsgi import Response

PARAMS_LIMIT = 8 * 1024
# a template setting whose name says it holds a secret is never shown
_SECRET_SETTING = re.compile(r"(?i)secret|token|passw|aes|key$")
SAMPLES = {"thing": "示例商品", "number": "3", "letter": "abc", "symbol": "%",
           "character_string": "A123", "time": "2026-01-01 10:00", "date": "2026-01-01",
           "amount": "12.50", "phone_number": "13800138000", "car_number": "粤A12345",
           "name": "张三", "phrase": "已发货"}


def filters_of(query: dict[str, str]) -> messages.Filters:
    return messages.Filters(
        status=inputs.status(query),
        template=inputs.text(query, "template", limit=128),
        app=inputs.text(query, "app", limit=32),
        openid=inputs.text(query, "openid", limit=128),
        q=inputs.text(query, "q", limit=191, label="q (dedup_key or msgid)"))


class Pages:
    def __init__(self, console: ConsoleParts) -> None:
        self.c = console

    def _page(self, req: Req, name: str, **values: Any) -> Response:
        return html(self.c.renderer.page(name, **context(req, **values)))

    # ------------------------------------------------------------- overview

    def overview(self, req: Req) -> Response:
        snap = self.c.cache.get()
        return self._page(req, "overview.html", title="Overview / 概览", snap=snap,
                          chart=sends_svg(snap.per_minute, snap.chart_start),
                          statuses=list(snap.totals))

    # ------------------------------------------------------------- messages

    def messages(self, req: Req) -> Response:
        f = filters_of(req.query)
        before = inputs.integer(req.query.get("before"), "before", low=1)
        with self.c.db.connection_context():
            page = messages.search(self.c.db, f, before)
        shown_ids = [r.id for r in page.rows]
        wait_ids = [r.id for r in page.rows if r.status == "wait"]
        fail_ids = [r.id for r in page.rows if r.status == "fail"]
        return self._page(req, "messages.html", title="Messages / 消息", f=f, page=page,
                          shown_ids=shown_ids, wait_ids=wait_ids, fail_ids=fail_ids,
                          # an action by filters names every matching row; with q it
                          # names the rows shown (q is no db/ops filter)
                          by_filters=bool((f.template or f.app or f.openid) and not f.q),
                          templates=sorted(self.c.ctx.templates.current.templates),
                          apps=list(self.c.cfg.apps), statuses=list(_statuses()))

    def message(self, req: Req) -> Response:
        row_id = inputs.row_id(req.params["id"])
        with self.c.db.connection_context():
            msg = messages.load(self.c.db, row_id, self.c.ctx.templates.current)
        if msg is None:
            raise NotFound(f"no message with id {row_id} / 消息不存在")
        return self._page(req, "message.html", title=f"Message {row_id} / 消息", msg=msg,
                          v=msg.values)

    # ------------------------------------------------------------- failures

    def failures(self, req: Req) -> Response:
        with self.c.db.connection_context():
            groups, capped = ledger.failure_groups(self.c.db)
            recent = messages.search(self.c.db, messages.Filters(status="fail"))
        return self._page(req, "failures.html", title="Failures / 失败", groups=groups,
                          capped=capped, recent=recent.rows[:20],
                          total=sum(g.rows for g in groups))

    # ------------------------------------------------------------- templates

    def templates(self, req: Req) -> Response:
        holder = self.c.ctx.templates
        current = holder.current
        on_disk: list[str] = []
        try:
            load_templates(holder.path, context=holder.context)
        except TemplateError as exc:
            on_disk = list(exc.problems) if hasattr(exc, "problems") else [str(exc)]
        except Exception as exc:  # noqa: BLE001 - an unreadable file is a state to show
            on_disk = [f"{type(exc).__name__}: {str(exc)[:300]}"]
        snap = self.c.cache.get()
        waiting: dict[str, int] = {}
        for g in snap.grid:
            if g.template:
                waiting[g.template] = waiting.get(g.template, 0) + g.counts.get("wait", 0)
        rows = [_describe(t, waiting) for t in current.templates.values()]
        preview = self._preview(req, current)
        return self._page(req, "templates.html", title="Templates / 模板", rows=rows,
                          path=str(holder.path), on_disk=on_disk, refused=holder.failures,
                          preview=preview, names=sorted(current.templates))

    def _preview(self, req: Req, current: Any) -> dict[str, Any] | None:
        name = inputs.text(req.query, "preview", limit=128)
        if name is None:
            return None
        tpl = current.templates.get(name)
        if tpl is None:
            raise BadInput("no template by that name / 模板不存在")
        params = inputs.free_text(req.query, "params", limit=PARAMS_LIMIT)
        if params is None or not params.strip():
            params = json.dumps(sample_params(tpl), ensure_ascii=False)
        openid = inputs.text(req.query, "openid", limit=128) or "oPreviewUser"
        out: dict[str, Any] = {"name": name, "params": params, "openid": openid}
        try:
            built = render_row(current, template=name, openid=openid, params=params,
                               phone="+8613800138000")
        except Exception as exc:  # noqa: BLE001 - the reason is the answer
            out["error"] = str(getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}")
            return out
        out["body"] = json.dumps(built.body, ensure_ascii=False, indent=2, default=str)
        out["target"] = built.built.target
        out["truncated"] = built.truncated
        return out

    # ------------------------------------------------------------- grants

    def grants(self, req: Req) -> Response:
        openid = inputs.text(req.query, "openid", limit=128)
        found: list[ledger.Grant] = []
        recent: list[messages.ListRow] = []
        if openid:
            with self.c.db.connection_context():
                found = ledger.grants(self.c.db, openid, [*self.c.cfg.apps, "default"])
                recent = messages.search(self.c.db, messages.Filters(openid=openid)).rows[:20]
        return self._page(req, "grants.html", title="Grants / 订阅授权", openid=openid,
                          grants=found, recent=recent, on_missing=self.c.cfg.grants.on_missing)

    # ------------------------------------------------------------- daemons

    def daemons(self, req: Req) -> Response:
        now = clock.now()
        with self.c.db.connection_context():
            found = ledger.daemons(self.c.db, now)
            tokens = ledger.token_states(self.c.db)
            held = holds.active(self.c.db, now)
        return self._page(req, "daemons.html", title="Daemons / 进程", daemons=found,
                          tokens=tokens, now=now, holds=held)


def _statuses() -> tuple[str, ...]:
    from db.models import STATUSES

    return STATUSES


def sample_params(tpl: Template) -> list[str] | dict[str, str]:
    """Values a preview starts with: per param, a sample of the keyword type of the
    first data item that uses it (so the preview passes the keyword checks)."""
    out: dict[str, str] = {}
    for name in tpl.params:
        pattern = re.compile(r"\{\{[^}]*\b" + re.escape(name) + r"\b")
        value = "sample"
        for item in tpl.items:
            if pattern.search(item.source):
                if item.key in tpl.enums and tpl.enums[item.key]:
                    value = tpl.enums[item.key][0]
                    break
                try:
                    value = SAMPLES.get(keywords.keyword_type(item.key), value)
                except keywords.KeywordError:
                    pass
                break
        out[name] = value
    return list(out.values()) if tpl.params else out


def _describe(tpl: Template, waiting: dict[str, int]) -> dict[str, Any]:
    keys = []
    for item in tpl.items:
        keys.append({"key": item.key, "type": tpl.kind.key_type(item.key), "source": item.source,
                     "enum": list(tpl.enums.get(item.key, ()))})
    settings = [(k, "(hidden)" if _SECRET_SETTING.search(k) else _setting(v))
                for k, v in sorted(tpl.settings.items())]
    return {"name": tpl.name, "channel": tpl.channel, "template_id": tpl.template_id,
            "app": tpl.app, "params": list(tpl.params), "data_keys": keys, "settings": settings,
            "fallback": list(tpl.fallback), "fallback_on": sorted(tpl.fallback_on),
            "waiting": waiting.get(tpl.name, 0) + (waiting.get(tpl.template_id or "", 0)
                                                   if tpl.template_id else 0),
            "line": tpl.line}


def _setting(value: object) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:300]
    except (TypeError, ValueError):
        return type(value).__name__


__all__ = ["Pages", "filters_of", "sample_params"]
