"""`show ID`: one row as a person on call needs it.

What happened to it in one sentence, every column, its history (msg_event) as a
timeline, its receipt, and its fallback chain (the row it is a hop of, and the hops
made from it). The row is read with SELECT * and each column decoded on its own, so
a row another program wrote badly is shown with the bad value quoted, never raises,
and a database of the previous schema (no history yet) still shows its columns.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from peewee import Database

import clock
from commands import human
from commands.common import EXIT_OK, EXIT_RUNTIME, err, load, open_queue, out
from db import rows
from db.decode import shown, text_or_shown, ts_or_none
from db.errors import cause
from db.queue import HELD_PREFIXES

TIME_COLUMNS = frozenset({"send_at", "expire_at", "created_at", "updated_at", "sent_at",
                          "lease_until", "started_at", "receipt_at"})
INT_COLUMNS = frozenset({"id", "priority", "attempts", "errcode", "parent_id"})
CHAIN_MAX = 10  # hops followed either way (a fallback list is a few templates long)


def read(db: Database, row_id: int) -> dict[str, Any] | None:
    """column -> decoded value (a datetime, int or text; a bad value as quoted text)."""
    found = rows.columns_of(db, row_id)
    if found is None:
        return None
    names, raw = found
    return {name: decode(name, value) for name, value in zip(names, raw, strict=True)}


def decode(name: str, value: object) -> Any:
    if value is None:
        return None
    if name in TIME_COLUMNS:
        dt = ts_or_none(value)
        return dt if dt is not None else f"unreadable time {shown(value)}"
    if name in INT_COLUMNS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return f"not an integer: {shown(value)}"
    return text_or_shown(value)


def history(db: Database, row_id: int) -> list[dict[str, Any]]:
    return [{"at": ts_or_none(at), "kind": text_or_shown(kind), "channel": text_or_shown(ch),
             "errcode": code, "detail": text_or_shown(detail), "daemon": text_or_shown(dmn)}
            for at, kind, ch, code, detail, dmn in rows.history(db, row_id)]


def chain(db: Database, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The fallback chain through this row, root first: [] when it has none."""
    def brief(r: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": int(r[0]), "template": text_or_shown(r[1]), "status": text_or_shown(r[2]),
                "parent_id": r[3] if isinstance(r[3], int) else None}

    up: list[dict[str, Any]] = []
    parent = row.get("parent_id")
    while isinstance(parent, int) and len(up) < CHAIN_MAX:
        found = rows.link(db, parent)
        if found is None:
            up.append({"id": parent, "template": None, "status": "purged", "parent_id": None})
            break
        up.append(brief(found))
        parent = up[-1]["parent_id"]
    down: list[dict[str, Any]] = []
    frontier = [row["id"]]
    while frontier and len(down) < CHAIN_MAX:
        for r in rows.links_from(db, frontier.pop(0)):
            down.append(brief(r))
            frontier.append(int(r[0]))
    if not up and not down:
        return []
    me = {"id": row["id"], "template": row.get("template"), "status": row.get("status"),
          "parent_id": row.get("parent_id"), "this": True}
    return [*reversed(up), me, *down]


def story(row: dict[str, Any], now: datetime) -> str:
    """What happened to the row, in words."""
    status = row.get("status")
    tries = row.get("attempts")
    n = f"{tries} attempt{'' if tries == 1 else 's'}" if isinstance(tries, int) else "attempts"
    error = row.get("error") or ""
    send_at, expire_at = row.get("send_at"), row.get("expire_at")
    if status == "wait":
        if not isinstance(send_at, datetime):
            text = f"waiting, but its send_at is an {send_at}: dispatch will fail it"
        elif send_at <= now:
            text = f"waiting and due since {human.age((now - send_at).total_seconds())}: " \
                   "the next dispatch run sends it"
            if error:
                text += f" (last: {error})"
        elif error.startswith("will retry"):
            text = (f"{n} so far; the last failed and it is retried "
                    f"{human.when(send_at, now)}: {error.removeprefix('will retry: ')}")
        elif any(error.startswith(prefix) for prefix, _ in HELD_PREFIXES):
            text = f"held until {human.when(send_at, now)}: {error}"
        elif error:
            text = f"waiting until {human.when(send_at, now)}: {error}"
        else:
            text = f"scheduled for {human.when(send_at, now)}"
        if isinstance(expire_at, datetime):
            text += f"; never sent after {human.when(expire_at, now)}"
        return text
    if status == "sending":
        lease = row.get("lease_until")
        text = f"being sent by {row.get('claimed_by') or 'a daemon'}"
        if isinstance(lease, datetime) and lease < now:
            return text + (f", but its lease ran out {human.age((now - lease).total_seconds())}"
                           " ago: stale_retry recovers it")
        return text + f", lease until {human.when(lease, now)}"
    if status == "success":
        sent = row.get("sent_at")
        text = f"delivered to WeChat {human.when(sent, now)} after {n}"
        if row.get("msgid"):
            text += f", msgid {row['msgid']}"
        receipt = row.get("receipt")
        if receipt == "delivered":
            text += "; the user's device confirmed it"
        elif receipt == "failed":
            text += f"; the delivery receipt says it failed: {row.get('receipt_error') or '?'}"
        return text
    if status == "fail":
        return f"failed {human.when(row.get('updated_at'), now)} after {n}: {error or '?'}"
    if status == "cancelled":
        return f"cancelled {human.when(row.get('updated_at'), now)}" + (
            f": {error}" if error else " (by the application)")
    return f"status {status!r} is not one Herald knows"


def _value(value: Any, now: datetime) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return human.when(value, now)
    return str(value)


def _jsonable(value: Any) -> Any:
    return human.iso(value) if isinstance(value, datetime) else value


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    db = open_queue(cfg)
    now = clock.now()
    notes: list[str] = []
    with db.connection_context():
        row = read(db, args.id)
        if row is None:
            err(f"no row with id {args.id} in msg_list (purged, or never there)")
            return EXIT_RUNTIME
        try:
            events: list[dict[str, Any]] | None = history(db, args.id)
        except Exception as exc:  # noqa: BLE001 - an older schema has no history table
            events = None
            notes.append(f"no history: {cause(exc)} (run init-db to upgrade)")
        hops = chain(db, row) if "parent_id" in row else []
    if args.json:
        print(json.dumps({
            "row": {k: _jsonable(v) for k, v in row.items()}, "story": story(row, now),
            "history": None if events is None else [
                {k: _jsonable(v) for k, v in e.items()} for e in events],
            "chain": hops}, ensure_ascii=False, indent=2))
        return EXIT_OK
    out(f"row {row['id']}: {row.get('status')}")
    out(f"  {story(row, now)}")
    out("")
    width = max(len(k) for k in row)
    for name, value in row.items():
        text = _value(value, now)
        if name == "app" and value is None:
            text = "- (the app named default)"
        out(f"  {name:<{width}}  {text}")
    if row.get("receipt"):
        out("")
        out(f"receipt: {row['receipt']} {_value(row.get('receipt_at'), now)}"
            + (f": {row['receipt_error']}" if row.get("receipt_error") else ""))
    elif "receipt" in row and row.get("status") == "success":
        out("")
        out("receipt: none yet (WeChat reports it when the user's device gets it, if the "
            "app's message push is set up)")
    if hops:
        out("")
        out("fallback chain:")
        for h in hops:
            mark = "  <- this row" if h.get("this") else ""
            out(f"  #{h['id']} {h['template']} ({h['status']}){mark}")
    if events is not None:
        out("")
        out("history:" if events else "history: none yet")
        for e in events:
            bits = [e["kind"] or "?"]
            if e["channel"]:
                bits.append(e["channel"])
            if e["errcode"] is not None:
                bits.append(f"errcode {e['errcode']}")
            line = f"  {human.stamp(e['at'])}  {' '.join(bits):<22} {e['detail'] or ''}"
            if e["daemon"]:
                line += f"  [{e['daemon']}]"
            out(line.rstrip())
    for note in notes:
        out(f"note: {note}")
    return EXIT_OK


__all__ = ["chain", "cmd_show", "history", "read", "story"]
