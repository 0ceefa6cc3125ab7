"""The grant ledger (subscribe_grant): what Herald knows of each user's one-time grants.

One accept of a subscribe popup allows one message ("订阅一次发送一次"); WeChat has no
API to ask how many are left, so Herald counts: a popup accept adds one, a success
uses one, a 43101 answer says none is left, a reject (popup, or the user switching the
template off) blocks the template. balance NULL means "unknown": Herald never saw a
grant event for that user and template, so it does not stand in the way.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from peewee import Database

from db.dialects import dialect
from db.outcomes import upsert_grant

Key = tuple[str, str, str]  # (app, openid, template_id)
HELD = "held: no grant"  # how dispatch marks a row it holds for a grant


def blocked(db: Database, keys: Iterable[Key]) -> dict[Key, str]:
    """The keys whose user cannot receive the template now, with the reason."""
    wanted = sorted(set(keys))
    out: dict[Key, str] = {}
    d = dialect(db)
    p = d.param
    for start in range(0, len(wanted), 300):
        chunk = wanted[start:start + 300]
        tuples = ", ".join(f"({p}, {p}, {p})" for _ in chunk)
        cur = db.execute_sql(
            "SELECT app, openid, template_id, balance, status FROM subscribe_grant "
            f"WHERE (app, openid, template_id) IN ({tuples})",
            [v for key in chunk for v in key])
        for app, openid, template_id, balance, status in cur.fetchall():
            if status in ("reject", "ban"):
                out[(app, openid, template_id)] = (
                    "the user rejected this template" if status == "reject"
                    else "this template is banned for the user")
            elif balance is not None and balance <= 0:
                out[(app, openid, template_id)] = "no grant left (all used, or WeChat " \
                                                  "answered 43101)"
    return out


def record_grant(db: Database, app: str, openid: str, template_id: str, result: str,
                 now: datetime) -> None:
    """A user's answer to a subscribe popup (accept / reject), or switching a template
    off (reject), or a ban. Call inside a transaction."""
    d = dialect(db)
    cursor = db.cursor()
    if result == "accept":
        upsert_grant(d, cursor, app, openid, template_id, balance="+1", status="accept",
                     stamp=d.ts(now))
    elif result in ("reject", "ban"):
        p = d.param
        # the balance stays what it was: whether a reject wipes earlier grants is not
        # documented, and a later accept makes the template usable again either way
        changed = db.execute_sql(
            f"UPDATE subscribe_grant SET status = {p}, updated_at = {p} "
            f"WHERE app = {p} AND openid = {p} AND template_id = {p}",
            (result, d.ts(now), app, openid, template_id)).rowcount
        if not changed:
            upsert_grant(d, cursor, app, openid, template_id, balance=None, status=result,
                         stamp=d.ts(now))
    else:
        raise ValueError(f"unknown grant result {result!r}")


def release_held(db: Database, app: str, openid: str, templates: Iterable[str],
                 now: datetime) -> int:
    """Rows held for a grant of these templates (names or ids) go out now."""
    names = sorted(set(templates))
    if not names:
        return 0
    d = dialect(db)
    p = d.param
    app_cond = f"(app = {p} OR app IS NULL)" if app == "default" else f"app = {p}"
    cur = db.execute_sql(
        f"UPDATE msg_list SET send_at = {p}, error = NULL, updated_at = {p} "
        f"WHERE status = 'wait' AND openid = {p} AND {app_cond} "
        f"AND template IN ({', '.join([p] * len(names))}) AND error LIKE {p}",
        (d.ts(now), d.ts(now), openid, app, *names, HELD + "%"))
    return int(cur.rowcount)


__all__ = ["HELD", "Key", "blocked", "record_grant", "release_held"]
