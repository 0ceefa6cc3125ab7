"""The other pages' reads: failures by group, one user's grants, the daemons, the
tokens' expiry (never a token: the token column is not even selected)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from peewee import Database

from db import console as reads
from db import heartbeat
from web.console.values import Bad, count, num, ts, txt

GROUPS_SHOWN = 200
GRANTS_SHOWN = 500
NULL_GROUP_IDS = 5000  # a group without errcode is re-driven by id, this many at a time


@dataclass
class FailureGroup:
    errcode: int | Bad | None
    template: str | None
    rows: int
    last: datetime | Bad | None
    example: str | None


def failure_groups(db: Database) -> tuple[list[FailureGroup], bool]:
    found = reads.failure_groups(db, GROUPS_SHOWN + 1)
    groups = [FailureGroup(num(code), txt(tpl), count(n), ts(last), txt(example))
              for code, tpl, n, last, example in found[:GROUPS_SHOWN]]
    return groups, len(found) > GROUPS_SHOWN


def null_errcode_ids(db: Database, template: str | None) -> list[int]:
    """Failed rows of one template that have no errcode (a render error, an expiry):
    db/ops selects by errcode value only, so these are named by id."""
    found = reads.failed_without_errcode(db, template, NULL_GROUP_IDS)
    return [int(r[0]) for r in found]


@dataclass
class Grant:
    app: str | None
    template_id: str | None
    balance: int | Bad | None
    status: str | None
    updated_at: datetime | Bad | None


def grants(db: Database, openid: str, apps: Iterable[str]) -> list[Grant]:
    """One user's ledger. The primary key is (app, openid, template_id): naming the
    configured apps makes this a key lookup per app instead of a scan."""
    names = sorted(set(apps))
    if not names:
        return []
    found = reads.grants(db, openid, names, GRANTS_SHOWN)
    return [Grant(txt(a), txt(t), num(b), txt(s), ts(u)) for a, t, b, s, u in found]


@dataclass
class TokenState:
    app: str
    expires_at: datetime | Bad | None
    refreshed_at: datetime | Bad | None
    refreshed_by: str | None


def token_states(db: Database) -> list[TokenState]:
    found = reads.token_states(db)
    return [TokenState(txt(a) or "?", ts(e), ts(r), txt(b)) for a, e, r, b in found]


# keys of a heartbeat's info whose values are never shown, whatever they hold
_SECRET_KEY = re.compile(r"(?i)secret|passw|aes|key|credential|signature|(?<!s)token$"
                         r"|access_token")


@dataclass
class Daemon:
    seen: heartbeat.Seen
    tokens: list[tuple[str, datetime | Bad | None]]
    alerts: list[str]
    other: list[tuple[str, str]]


def daemons(db: Database, now: datetime) -> list[Daemon]:
    try:
        seen = heartbeat.seen(db, now)
    except (TypeError, ValueError):
        # heartbeat.seen reads pid as an integer; a row another program wrote with a
        # pid that is none must not take the page down: read them one by one instead
        seen = _seen_one_by_one(db, now)
    out = []
    for s in seen:
        out.append(Daemon(s, token_expiry(s.info.get("tokens")),
                          _alerts(s.info.get("alerts")), _other(s.info)))
    return out


def _seen_one_by_one(db: Database, now: datetime) -> list[heartbeat.Seen]:
    out = []
    for raw in reads.daemons(db):
        daemon_id, role, host, pid, version, started, last, dispatched, info = raw
        last_seen = ts(last)
        pid_value = num(pid)
        out.append(heartbeat.Seen(
            str(txt(daemon_id)), str(txt(role)), str(txt(host)),
            pid_value if isinstance(pid_value, int) else 0, str(txt(version)),
            _dt(ts(started)), _dt(last_seen), _dt(ts(dispatched)), _info(info),
            alive=isinstance(last_seen, datetime)
            and now - last_seen <= heartbeat.STALE_AFTER))
    oldest = datetime.min.replace(tzinfo=UTC)
    out.sort(key=lambda s: s.last_seen or oldest, reverse=True)
    return out


def _info(value: object) -> dict[str, Any]:
    """One row's info, or {} when it is no JSON object (the other rows keep theirs)."""
    text = txt(value)
    if not isinstance(text, str) or not text:
        return {}
    try:
        found = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


def _dt(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def token_expiry(value: object) -> list[tuple[str, datetime | Bad | None]]:
    """info["tokens"]: {app: expiry} or {app: {"expires_at": ...}}; only the expiry is
    ever read, so a token written there by mistake is not shown."""
    if not isinstance(value, dict):
        return []
    out = []
    for app, item in list(value.items())[:50]:
        when = item.get("expires_at") if isinstance(item, dict) else item
        out.append((str(app)[:64], _when(when)))
    return out


def _when(value: object) -> datetime | Bad | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):  # Unix seconds
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return Bad(repr(value)[:40])
    if isinstance(value, str):
        return ts(value)
    return Bad(repr(value)[:40])


def _alerts(value: object) -> list[str]:
    if isinstance(value, dict):  # what `run` writes: {app: reason}
        value = [f"app {app}: {reason}" for app, reason in list(value.items())[:20]]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [str(a)[:300] if not isinstance(a, dict) else _compact(a)[:300] for a in value[:20]]


def _other(info: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in list(info.items())[:30]:
        if key in ("tokens", "alerts"):
            continue
        if _SECRET_KEY.search(str(key)):
            out.append((str(key), "(hidden)"))
            continue
        out.append((str(key)[:64], _compact(_scrub(value))[:300]))
    return out


def _scrub(value: Any, depth: int = 0) -> Any:
    """Nested info with secret-looking keys hidden."""
    if depth > 5:
        return "…"
    if isinstance(value, dict):
        return {k: ("(hidden)" if _SECRET_KEY.search(str(k)) else _scrub(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value[:20]]
    return value


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


__all__ = ["Daemon", "FailureGroup", "Grant", "TokenState", "daemons", "failure_groups",
           "grants", "null_errcode_ids", "token_states"]
