"""Finding messages, and everything about one: its columns, history, chain, request.

The list pages newest first by id (keyset: `before`, never OFFSET) and picks, for
each search, a plan one index answers, so a page costs about the same with a million
rows as with a hundred:

- q (dedup_key or msgid, or an id): the unique dedup_key index and the msgid index;
- openid: the (openid, id) index, in order;
- a status with few rows (at most INDEX_PATH_MAX, counted up to there): the status
  index, then the newest of those;
- any other filter (template, app, a status with many rows): the id range of the
  next WINDOW rows down from `before`, filtered row by row. A window may hold fewer
  matches than a page; the page then says which ids it searched and links on.
- no filter: the primary key, newest first.
Filters that are not the plan's own are checked row by row, so SQLite never trades
the plan's index for a worse one. The statements are db/console.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from peewee import Database

from db import console as reads
from db.decode import shown
from templates import TemplateSet, render_row
from web.console.values import Bad, num, ts, txt

PAGE = 50
WINDOW = 100_000
INDEX_PATH_MAX = 20_000
EVENTS_SHOWN = 500
CHAIN_HOPS = 20

LIST_COLUMNS = reads.LIST_COLUMNS

# every msg_list column, in the order the message page shows them, with its kind
ALL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "int"), ("status", "text"), ("app", "text"), ("template", "text"),
    ("openid", "text"), ("phone", "text"), ("params", "text"), ("page", "text"),
    ("priority", "int"), ("attempts", "int"), ("dedup_key", "text"),
    ("created_at", "ts"), ("updated_at", "ts"), ("send_at", "ts"), ("expire_at", "ts"),
    ("started_at", "ts"), ("sent_at", "ts"), ("claimed_by", "text"), ("lease_until", "ts"),
    ("errcode", "int"), ("error", "text"), ("msgid", "text"), ("parent_id", "int"),
    ("receipt", "text"), ("receipt_error", "text"), ("receipt_at", "ts"),
)
_DECODE = {"int": num, "text": txt, "ts": ts}


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    template: str | None = None
    app: str | None = None
    openid: str | None = None
    q: str | None = None

    @property
    def any(self) -> bool:
        return any((self.status, self.template, self.app, self.openid, self.q))

    def link(self, **extra: object) -> str:
        """/messages?... with these filters (and `extra`)."""
        values = {k: v for k, v in (("status", self.status), ("template", self.template),
                                    ("app", self.app), ("openid", self.openid),
                                    ("q", self.q)) if v}
        values.update({k: str(v) for k, v in extra.items() if v is not None})
        return "/messages" + ("?" + urlencode(values) if values else "")


@dataclass
class ListRow:
    id: int
    app: str | None
    template: str | None
    openid: str | None
    status: str | None
    attempts: int | Bad | None
    errcode: int | Bad | None
    error: str | None
    created_at: datetime | Bad | None
    send_at: datetime | Bad | None
    sent_at: datetime | Bad | None
    receipt: str | None
    parent_id: int | Bad | None


@dataclass
class Page:
    rows: list[ListRow]
    plan: str  # which index answered, for the operator and the benchmark
    next_before: int | None = None
    window: tuple[int, int] | None = None  # ids [low, high) searched, in window plans


def _list_row(raw: tuple) -> ListRow:
    (rid, app, template, openid, status, attempts, errcode, error, created, send_at,
     sent_at, receipt, parent) = raw
    return ListRow(int(rid), txt(app), txt(template), txt(openid), txt(status), num(attempts),
                   num(errcode), txt(error), ts(created), ts(send_at), ts(sent_at),
                   txt(receipt), num(parent))


def search(db: Database, f: Filters, before: int | None = None) -> Page:
    asked = reads.Search(q=f.q, q_id=int(f.q) if f.q and _as_id(f.q) else None,
                     status=f.status, template=f.template, app=f.app, openid=f.openid)
    found = reads.search(db, asked, before, page=PAGE, window=WINDOW, few_max=INDEX_PATH_MAX)
    rows = [_list_row(r) for r in found.rows]
    if f.q:
        return Page(rows, found.plan)
    if found.plan == "window" and found.window is None:
        return Page([], "window")  # no rows at all
    page = _paged(rows, found.plan)
    if found.window is not None:
        page.window = found.window
        if page.next_before is None and found.more_below:
            page.next_before = found.window[0]  # nothing more here: search the next one down
    return page


def _paged(found: list[ListRow], plan: str) -> Page:
    if len(found) > PAGE:
        return Page(found[:PAGE], plan, next_before=found[PAGE - 1].id)
    return Page(found, plan)


def _as_id(q: str) -> bool:
    return q.isascii() and q.isdigit() and len(q) <= 18


# ----------------------------------------------------------------- one message


@dataclass
class Event:
    id: int
    at: datetime | Bad | None
    kind: str | None
    channel: str | None
    errcode: int | Bad | None
    detail: str | None
    daemon: str | None


@dataclass
class Hop:
    id: int
    status: str | None
    template: str | None
    errcode: int | Bad | None
    parent_id: int | None
    this: bool = False


@dataclass
class Rendered:
    ok: bool
    body: str = ""  # the request body as pretty JSON
    target: str = ""
    truncated: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class Message:
    id: int
    columns: list[tuple[str, Any]]
    values: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    events_capped: bool = False
    chain: list[Hop] = field(default_factory=list)
    rendered: Rendered | None = None


def load(db: Database, row_id: int, templates: TemplateSet) -> Message | None:
    names = [name for name, _ in ALL_COLUMNS]
    found = reads.message(db, row_id, names)
    if not found:
        return None
    raw = dict(zip(names, found[0], strict=True))
    values = {name: _DECODE[kind](raw[name]) for name, kind in ALL_COLUMNS}
    msg = Message(id=row_id, columns=[(n, values[n]) for n, _ in ALL_COLUMNS], values=values)
    ev = reads.events(db, row_id, EVENTS_SHOWN + 1)
    msg.events = [Event(int(i), ts(at), txt(k), txt(ch), num(code), txt(d), txt(dm))
                  for i, at, k, ch, code, d, dm in ev[:EVENTS_SHOWN]]
    msg.events_capped = len(ev) > EVENTS_SHOWN
    msg.chain = chain(db, row_id, values.get("parent_id"))
    msg.rendered = render(templates, raw, row_id)
    return msg


def _hop(raw: tuple, this_id: int) -> Hop:
    rid, status, template, errcode, parent = raw
    parent_id = num(parent)
    return Hop(int(rid), txt(status), txt(template), num(errcode),
               parent_id if isinstance(parent_id, int) else None, this=int(rid) == this_id)


def chain(db: Database, row_id: int, parent: object) -> list[Hop]:
    """The fallback chain through this row: its ancestors (via parent_id), itself, and
    the hops made from it, oldest first; bounded, and safe against a cycle."""
    seen = {row_id}
    up: list[Hop] = []
    next_id = parent if isinstance(parent, int) else None
    while next_id is not None and next_id not in seen and len(up) < CHAIN_HOPS:
        seen.add(next_id)
        found = reads.hop(db, next_id)
        if not found:
            break
        hop = _hop(found[0], row_id)
        up.append(hop)
        next_id = hop.parent_id
    this = reads.hop(db, row_id)
    down: list[Hop] = []
    frontier = [row_id]
    while frontier and len(down) < CHAIN_HOPS:
        found = reads.hops_from(db, frontier, CHAIN_HOPS)
        frontier = []
        for raw in found:
            hop = _hop(raw, row_id)
            if hop.id not in seen:
                seen.add(hop.id)
                down.append(hop)
                frontier.append(hop.id)
    if not up and not down:
        return []
    return [*reversed(up), *(_hop(r, row_id) for r in this), *down]


def render(templates: TemplateSet, raw: dict[str, Any], row_id: int) -> Rendered:
    """The request this row makes (or would make) now, with the templates in force.
    The body holds no token: the access token travels in the URL, which is not shown."""
    template, openid, params = txt(raw["template"]), txt(raw["openid"]), raw["params"]
    if getattr(params, "raw", None) is not None or isinstance(params, bytes):
        return Rendered(False, reason=f"params is not valid UTF-8 text ({shown(params)})")
    try:
        req = render_row(templates, template=template, openid=openid, params=params,
                         page=txt(raw["page"]), app=txt(raw["app"]), row_id=row_id,
                         phone=txt(raw["phone"]))
    except Exception as exc:  # noqa: BLE001 - RenderError, or anything one row can cause
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {str(exc)[:200]}"
        return Rendered(False, reason=str(reason))
    body = json.dumps(req.body, ensure_ascii=False, indent=2, default=str)
    return Rendered(True, body=body, target=req.built.target, truncated=req.truncated)


__all__ = ["ALL_COLUMNS", "Filters", "ListRow", "Message", "Page", "chain", "load", "render",
           "search"]
