"""`status`: the queue, the daemons and the tokens as the person on call needs them.

Counts by status with the waiting rows split the way they behave (due now, scheduled
for later, retrying after a failure, held for quota, token or grant), per app and
template; the oldest due row; which daemons are alive (their heartbeats), each app's
token expiry and any configuration alert a daemon reported; the last failures.
`--json` gives the same data. Each section is read on its own: one that cannot be
read (an older schema, a table another program broke) is reported as such and the
rest still shows. Every query is answered from an index (db/queue.py).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import Any

from peewee import Database

import clock
from commands import holds as holds_verb
from commands import human
from commands.common import EXIT_OK, load, open_queue, out, safe_url
from config import Config
from db import holds
from db import spending as spending_db
from db.decode import text_or_shown, ts_or_none
from db.errors import cause
from db.heartbeat import seen
from db.models import STATUSES
from db.queue import (
    OPEN_STATES,
    RECEIPT_WINDOW_HOURS,
    WAIT_STATES,
    counts_by_status,
    failed_since,
    held_for_grant,
    oldest_due,
    open_rows,
    pending_events,
    receipts_since,
    recent_failures,
)
from db.rows import token_states as stored_tokens
from db.schema import VERSION, state

FAILED_WINDOW = timedelta(hours=24)
STATE_WORDS = {
    "due": "due", "scheduled": "scheduled", "retrying": "retrying",
    "held_quota": "held for quota", "held_token": "held for a token",
    "held_grant": "held for a grant", "held_window": "waiting for a send window",
    "held_collapse": "in a collapse window", "held_cap": "waiting for a cap",
    "sending": "sending", "stale": "past their lease",
}


def gather(db: Database, cfg: Config, now: datetime, failures: int = 10) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what --json prints)."""
    report: dict[str, Any] = {"database": safe_url(cfg.database), "now": human.iso(now),
                              "problems": []}

    def section(name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one unreadable section, not no status
            db.rollback() if not db.is_closed() and db.in_transaction() else None
            report["problems"].append(f"{name}: cannot be read: {cause(exc)}")
            return None

    schema = section("schema", lambda: state(db))
    if schema is not None:
        report["schema"] = {"version": schema.version, "current": VERSION,
                            "up_to_date": schema.up_to_date}
        if not schema.up_to_date:
            report["problems"].append(schema.describe())
    report["counts"] = section("counts", lambda: counts_by_status(db)) or dict.fromkeys(STATUSES, 0)
    opened = section("waiting rows", lambda: open_rows(db, now)) or []
    report["open"] = {s: sum(o.rows for o in opened if o.state == s) for s in OPEN_STATES}
    first = section("oldest due row", lambda: oldest_due(db, now))
    report["oldest_due"] = None if first is None else {
        "id": first[0], "send_at": human.iso(first[1]),
        "age_seconds": round(max(0.0, (now - first[1]).total_seconds()), 3)}
    # kept for scripts written against the first release's --json
    report["oldest_due_wait_seconds"] = (report["oldest_due"] or {}).get("age_seconds")
    # rows the collapse cancelled (db/spending.py); held ones are in "open" above
    report["superseded"] = section(
        "superseded rows", lambda: spending_db.counts(db)["superseded"]) or 0
    failed = section("failures", lambda: failed_since(db, now - FAILED_WINDOW)) or []
    report["failed_24h"] = sum(n for _, _, n in failed)
    report["by_template"] = _by_template(opened, failed)
    report["daemons"] = section("daemons", lambda: _daemons(db, now)) or []
    report["tokens"] = section("tokens", lambda: _tokens(db, cfg, now)) or []
    # (a database not upgraded yet has no quota_hold table: the schema note says so)
    report["holds"] = [] if schema is not None and (schema.version or 0) < 3 else [
        holds_verb.as_json(h, now)
        for h in section("quota holds", lambda: holds.active(db, now)) or []]
    report["alerts"] = [
        {"app": app, "reason": str(reason), "daemon": d["daemon_id"]}
        for d in report["daemons"] if d["alive"]
        for app, reason in sorted((d["info"].get("alerts") or {}).items())]
    report["receipts"], report["grants"], report["pushes"] = _delivery_truth(
        db, cfg, now, report["daemons"], section)
    report["recent_failures"] = [
        {"id": f.id, "app": f.app, "template": f.template, "errcode": f.errcode,
         "error": f.error, "updated_at": human.iso(f.updated_at)}
        for f in section("recent failures", lambda: recent_failures(db, failures)) or []]
    return report


def _delivery_truth(db: Database, cfg: Config, now: datetime, daemons: list[dict[str, Any]],
                    section: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Receipts of the last day, rows held for a grant, what the web side received."""
    since = now - timedelta(hours=RECEIPT_WINDOW_HOURS)
    missing_after = cfg.receipts.missing_after
    found = section("receipts", lambda: receipts_since(
        db, since, now - timedelta(seconds=missing_after)))
    receipts = {"window_hours": RECEIPT_WINDOW_HOURS, "missing_after_seconds": missing_after,
                **(vars(found) if found is not None else {})}
    held = section("grants", lambda: held_for_grant(db)) or (0, 0)
    grants = {"on_missing": cfg.grants.on_missing, "rows_held": held[0], "users_held": held[1]}
    counts: dict[str, int] = {}
    for d in daemons:
        if d["role"] == "serve" and d["alive"]:
            for what, n in (d["info"].get("pushes") or {}).items():
                if isinstance(n, int):
                    counts[str(what)] = counts.get(str(what), 0) + n
    pushes = {"received": counts, "pending": section("pushes", lambda: pending_events(db))}
    return receipts, grants, pushes


def _by_template(opened: list[Any], failed: list[tuple[str | None, str, int]]
                 ) -> list[dict[str, Any]]:
    table: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(app: str | None, template: str) -> dict[str, Any]:
        key = (app or "default", template)
        if key not in table:
            table[key] = {"app": key[0], "template": template,
                          **dict.fromkeys(OPEN_STATES, 0), "failed_24h": 0}
        return table[key]

    for o in opened:
        entry(o.app, o.template)[o.state] += o.rows
    for app, template, n in failed:
        entry(app, template)["failed_24h"] += n
    return [table[k] for k in sorted(table)]


def _daemons(db: Database, now: datetime) -> list[dict[str, Any]]:
    return [{"daemon_id": s.daemon_id, "role": s.role, "host": s.host, "pid": s.pid,
             "version": s.version, "alive": s.alive, "started_at": human.iso(s.started_at),
             "last_seen": human.iso(s.last_seen), "last_dispatch": human.iso(s.last_dispatch),
             "info": s.info}
            for s in seen(db, now)]


def _tokens(db: Database, cfg: Config, now: datetime) -> list[dict[str, Any]]:
    """Each configured app's shared token: when it expires, who refreshed it (never the
    token itself)."""
    rows = {text_or_shown(app): (ts_or_none(exp), ts_or_none(ref), text_or_shown(by))
            for app, exp, ref, by in stored_tokens(db)}
    out_ = []
    for name in sorted(set(cfg.apps) | {a for a in rows if a}):
        exp, ref, by = rows.get(name, (None, None, None))
        app = cfg.apps.get(name)
        out_.append({"app": name, "source": app.token_source if app else "not configured",
                     "expires_at": human.iso(exp),
                     "expires_in_seconds": None if exp is None else round(
                         (exp - now).total_seconds()),
                     "refreshed_at": human.iso(ref), "refreshed_by": by})
    return out_


# ----------------------------------------------------------------- text


def _parse(text: str | None) -> datetime | None:
    return ts_or_none(text)


def lines(report: dict[str, Any], now: datetime) -> list[str]:
    """The report as short lines for a terminal."""
    o, counts = report["open"], report["counts"]
    waits = [f"{o[s]} {STATE_WORDS[s]}" for s in
             ("due", "scheduled", "retrying", "held_quota", "held_token", "held_grant",
              "held_window", "held_collapse", "held_cap")
             if o[s] or s in ("due", "scheduled", "retrying")]
    notes = {
        "wait": ", ".join(waits),
        "sending": (f"{o['stale']} past their lease (stale_retry recovers them)"
                    if o["stale"] else ""),
        "fail": f"{report['failed_24h']} in the last 24 h" if counts.get("fail") else "",
        "cancelled": (f"{report['superseded']} superseded by a newer row (collapse_key)"
                      if report.get("superseded") else ""),
    }
    text = [f"queue {report['database']} at {human.stamp(_parse(report['now']))}", ""]
    text.append(f"{'status':<10} {'rows':>9}")
    for s in STATUSES:
        note = notes.get(s, "")
        text.append(f"{s:<10} {counts.get(s, 0):>9}" + (f"   {note}" if note else ""))
    first = report["oldest_due"]
    text.append("")
    if first is None:
        text.append("oldest due row: none (nothing is waiting to go out now)")
    else:
        text.append(f"oldest due row: #{first['id']}, due {human.age(first['age_seconds'])} "
                    "ago")
    if report["by_template"]:
        text += ["", _table_head(), *(_table_row(e) for e in report["by_template"])]
    text += ["", *_daemon_lines(report["daemons"], now)]
    text += _token_lines(report["tokens"], now)
    if report.get("holds"):
        text.append("quota holds (every daemon holds these sends; `holds --lift APP` ends "
                    "one):")
        text += [holds_verb.line(_hold_of(h), now) for h in report["holds"]]
    text += _truth_lines(report)
    if report["alerts"]:
        text.append("configuration alerts:")
        text += [f"  app {a['app']}: {a['reason']}" for a in report["alerts"]]
    if report["recent_failures"]:
        text += ["", "recent failures:"]
        for f in report["recent_failures"]:
            when = human.relative(_parse(f["updated_at"]), now)
            code = f" errcode {f['errcode']}:" if f["errcode"] is not None else ""
            text.append(f"  #{f['id']} {f['template']} ({when}){code} {f['error'] or ''}"
                        .rstrip())
    if report["problems"]:
        text += ["", *(f"note: {p}" for p in report["problems"])]
    return text


def _truth_lines(report: dict[str, Any]) -> list[str]:
    r, g, p = report.get("receipts") or {}, report.get("grants") or {}, report.get("pushes") or {}
    out = []
    if "delivered" in r:
        minutes = round(r["missing_after_seconds"] / 60)
        out.append(f"receipts (sent in the last {r['window_hours']} h): {r['delivered']} "
                   f"delivered, {r['failed']} failed, {r['missing']} none after {minutes} min, "
                   f"{r['awaiting']} awaiting")
    if g.get("rows_held"):
        out.append(f"grants: {g['rows_held']} rows held for a grant ({g['users_held']} users)")
    received = p.get("received") or {}
    if received or p.get("pending"):
        refused = ", ".join(f"{n} {k.removeprefix('refused:')}" for k, n in
                            sorted(received.items()) if k.startswith("refused:"))
        out.append(f"pushes (web side, since it started): {received.get('stored', 0)} stored, "
                   f"{received.get('duplicate', 0)} duplicates"
                   + (f", refused: {refused}" if refused else "")
                   + f"; {p.get('pending') or 0} waiting to be applied")
    return out


_COLUMNS = (("due", "due"), ("scheduled", "sched"), ("retrying", "retry"),
            ("held", "held"), ("sending", "sending"), ("failed_24h", "failed 24h"))


def _table_head() -> str:
    return f"{'app':<10} {'template':<24}" + "".join(f" {title:>10}" for _, title in _COLUMNS)


def _table_row(e: dict[str, Any]) -> str:
    values = dict(e, held=sum(e[s] for s in WAIT_STATES if s.startswith("held_")),
                  sending=e["sending"] + e["stale"])
    return (f"{e['app']:<10} {e['template']:<24}"
            + "".join(f" {values[k]:>10}" for k, _ in _COLUMNS))


def _daemon_lines(daemons: list[dict[str, Any]], now: datetime) -> list[str]:
    if not daemons:
        return ["daemons: none has reported (is `run` started? it writes a heartbeat every "
                "15 s)"]
    alive = sum(1 for d in daemons if d["alive"])
    text = [f"daemons: {alive} alive" + (f", {len(daemons) - alive} gone" if
                                         len(daemons) > alive else "")]
    for d in daemons:
        seen_ = human.relative(_parse(d["last_seen"]), now)
        head = (f"  {d['role']:<5} {d['host']} pid {d['pid']} v{d['version']}  "
                + ("alive" if d["alive"] else "GONE"))
        parts = [f"started {human.relative(_parse(d['started_at']), now)}",
                 f"last seen {seen_}"]
        if d["role"] == "run":
            dispatched = _parse(d["last_dispatch"])
            parts.append("last dispatch " + (human.relative(dispatched, now) if dispatched
                                             else "not yet"))
        text.append(f"{head}: {', '.join(parts)}")
    return text


def _hold_of(h: dict[str, Any]) -> holds.Hold:
    until = _parse(h["until"])
    assert until is not None  # an active hold has one
    return holds.Hold(h["app"], h["channel"], until, h["reason"], h["set_by"],
                      _parse(h["set_at"]))


def _token_lines(tokens: list[dict[str, Any]], now: datetime) -> list[str]:
    if not tokens:
        return []
    text = ["tokens:"]
    for t in tokens:
        if t["source"] == "external" and t["expires_at"] is None:
            text.append(f"  {t['app']:<10} external: kept by another service (none in the "
                        "access_token table)")
            continue
        exp = _parse(t["expires_at"])
        if exp is None:
            what = "none yet (the daemon fetches one at start)"
        elif exp <= now:
            what = f"EXPIRED {human.age((now - exp).total_seconds())} ago"
        else:
            what = f"expires in {human.age((exp - now).total_seconds())}"
        if t["refreshed_at"]:
            what += f", refreshed {human.relative(_parse(t['refreshed_at']), now)}"
            if t["refreshed_by"]:
                what += f" by {t['refreshed_by']}"
        text.append(f"  {t['app']:<10} {what}")
    return text


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    db = open_queue(cfg)
    now = clock.now()
    with db.connection_context():
        report = gather(db, cfg, now, args.failures)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return EXIT_OK
    for line in lines(report, now):
        out(line)
    return EXIT_OK


__all__ = ["cmd_status", "gather", "lines"]
