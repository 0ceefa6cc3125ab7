"""Re-drive and cancel: the operator's two buttons, on db/ops (the verbs' own code).

Each is two POSTs. The first is a dry run: db/ops counts and lists the rows the
selection names, and why any row named by id would be left alone; the page shows that
and a confirm button carrying the same selection. The second does it, as
actor console:<user>, which each row's history records; the log says who did what.
Then the browser is sent back (POST-redirect-GET) with the outcome as a note.
"""

from __future__ import annotations

import logging
from typing import Any

import clock
from db import ops
from web.console import inputs, ledger
from web.console.http import Req, context, html, redirect
from web.console.inputs import BadInput
from web.console.parts import ConsoleParts
from web.wsgi import Response

log = logging.getLogger("herald.console")
IDS_SHOWN = 200


# the fields each action's forms send; any other is refused, not ignored (an errcode
# on a cancel form would otherwise cancel more than its sender meant)
FIELDS = {
    "retry": frozenset({"csrf_token", "ids", "errcode", "errcode_null", "template", "app",
                        "openid", "back", "confirm", "expected", "scope"}),
    "cancel": frozenset({"csrf_token", "ids", "template", "app", "openid", "back", "confirm",
                         "expected", "scope"}),
}


def selection_of(form: dict[str, str], *, kind: str, db: Any) -> tuple[ops.Selection, str]:
    """The rows a form names, and how to say it. Refuses an empty selection: every row
    of a status is never one click away."""
    ids = inputs.id_list(form.get("ids"))
    template = inputs.text(form, "template", limit=128)
    app = inputs.text(form, "app", limit=32)
    openid = inputs.text(form, "openid", limit=128)
    errcode = None
    errcode_null = False
    if kind == "retry":
        errcode = inputs.integer(form.get("errcode"), "errcode", low=-(2 ** 31),
                                 high=2 ** 31 - 1)
        errcode_null = inputs.flag(form, "errcode_null")
        if errcode_null and not ids:
            with db.connection_context():
                ids = tuple(ledger.null_errcode_ids(db, template))
            if not ids:
                raise BadInput("no failed rows without an errcode match / 没有匹配的行")
    sel = ops.Selection(ids=ids, errcode=errcode, template=template, app=app, openid=openid)
    if sel.empty:
        raise BadInput("name the rows: ids, or a template, app, openid or errcode / 请指定行")
    said = []
    if ids:
        said.append(f"{len(ids)} ids" if len(ids) > 3 else "ids " + ", ".join(map(str, ids)))
    if errcode_null:
        said.append("errcode none")
    for name, value in (("errcode", errcode), ("template", template), ("app", app),
                        ("openid", openid)):
        if value is not None:
            said.append(f"{name} {value}")
    return sel, "; ".join(said)


def _hidden(form: dict[str, str]) -> list[tuple[str, str]]:
    keep = ("ids", "errcode", "errcode_null", "template", "app", "openid", "back")
    return [(k, form[k]) for k in keep if form.get(k)]


class Actions:
    def __init__(self, console: ConsoleParts) -> None:
        self.c = console

    def retry(self, req: Req) -> Response:
        return self._act(req, "retry")

    def cancel(self, req: Req) -> Response:
        return self._act(req, "cancel")

    def _act(self, req: Req, kind: str) -> Response:
        assert req.session is not None
        form = req.form()
        # every field is read and checked before the database is touched: a malformed
        # one (a `back` to another site, an `expected` that is no number) is a 400
        # that changes nothing, never an error after the rows were changed
        unknown = sorted(set(form) - FIELDS[kind])
        if unknown:
            named = ", ".join(n for n in unknown if inputs.plain_name(n)) or "fields"
            raise BadInput(f"{kind} takes no {named} / 表单含有未知字段")
        back = inputs.redirect_target(form.get("back"), "back")
        confirm = inputs.flag(form, "confirm")
        expected = inputs.integer(form.get("expected"), "expected")
        inputs.one_of(form.get("scope") or None, ("filters", "ids"), "scope")
        sel, said = selection_of(form, kind=kind, db=self.c.db)
        do = ops.retry if kind == "retry" else ops.cancel
        actor = f"console:{req.session.user}"
        with self.c.db.connection_context():
            report = do(self.c.db, sel, now=clock.now(), dry_run=not confirm, actor=actor)
        verb = "re-drive" if kind == "retry" else "cancel"
        if not confirm:
            log.info("console: %s dry run of %s: %d rows (%s)", req.session.user, verb,
                     len(report.changed), said)
            body = self.c.renderer.page("confirm.html", **context(
                req, title=f"Confirm {verb} / 确认", kind=kind, verb=verb, report=report,
                ids=report.changed[:IDS_SHOWN], said=said, fields=_hidden(form), back=back,
                expected=len(report.changed)))
            return html(body)
        n = len(report.changed)
        done = "re-drove" if kind == "retry" else "cancelled"
        log.info("console: %s %s %d rows (%s)", req.session.user, done, n, said)
        note = f"{done} {n} row{'s' if n != 1 else ''} ({said})"
        if expected is not None and expected != n:
            note += f"; the dry run counted {expected}: rows changed in between"
        if report.skipped:
            note += f"; {len(report.skipped)} left alone: " + "; ".join(
                f"#{i} {why}" for i, why in list(report.skipped.items())[:5])
        req.session.flash.append(note)
        self.c.cache.invalidate()
        return redirect(back)


__all__ = ["Actions", "selection_of"]
