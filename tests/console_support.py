"""What the console tests share: users, marker secrets, a database of each dialect with
every Herald table fresh, sample rows, an in-process console on a real waitress
listener, and logging in over HTTP as a browser does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from config import config_from_dict
from db.dialects import dialect
from tests.support import config_data, fresh_db
from web.console.auth import hash_password

PASSWORD = "correct horse battery"
# a cheaper scrypt than production's (the hash carries its own n): tests log in often
USERS = {
    "ann": {"password_hash": hash_password(PASSWORD, n=2 ** 12), "role": "operator"},
    "vic": {"password_hash": hash_password(PASSWORD, n=2 ** 12), "role": "viewer"},
}
# values no page may ever show
APP_SECRET = "MARKER-APP-SECRET-7f3a9c"
PUSH_TOKEN = "MARKERPUSHTOKEN7f3a9c"
AES_KEY = "MARKERAESKEY" + "A" * 31
ACCESS_TOKEN = "MARKER-ACCESS-TOKEN-7f3a9c"
MARKERS = (APP_SECRET, PUSH_TOKEN, AES_KEY, ACCESS_TOKEN)
ORDER = "order_status"
PARAMS = '["Flat white", 28, "shipped", "thanks"]'


def console_data(folder: Path, db_url: str, **overrides: Any) -> dict[str, Any]:
    console = {"listen": "127.0.0.1:0", "users": USERS, **overrides.pop("console", {})}
    apps = {"default": {"appid": "wxtest0000000001", "secret": APP_SECRET,
                        "push": {"token": PUSH_TOKEN, "aes_key": AES_KEY}}}
    return config_data(folder=folder, database=db_url, web={"listen": None},
                       console=console, apps=overrides.pop("apps", apps), **overrides)


def ts(db: Any, dt: datetime) -> Any:
    # whole seconds: SQLite's triggers refuse a fraction that rounds up to the next
    # second (59.9996 -> 60.000), a bug reported to the lead; seeds must not trip it
    return dialect(db).ts(dt.replace(microsecond=0))


def insert(db: Any, **cols: Any) -> int:
    """One msg_list row with plain SQL, as an application writes it."""
    names = ", ".join(cols)
    marks = ", ".join([dialect(db).param] * len(cols))
    sql = f"INSERT INTO msg_list ({names}) VALUES ({marks})"
    values = [ts(db, v) if isinstance(v, datetime) else v for v in cols.values()]
    if dialect(db).name == "postgres":
        return int(db.execute_sql(sql + " RETURNING id", values).fetchone()[0])
    return int(db.execute_sql(sql, values).lastrowid)


def event(db: Any, msg_id: int, kind: str, detail: str, at: datetime) -> None:
    p = dialect(db).param
    db.execute_sql(f"INSERT INTO msg_event (msg_id, at, kind, channel, detail, daemon) "
                   f"VALUES ({p}, {p}, {p}, 'subscribe', {p}, 'test-daemon')",
                   (msg_id, ts(db, at), kind, detail))


@dataclass
class Seeded:
    success: list[int]
    failed: list[int]  # errcode 47003
    waiting: list[int]  # scheduled an hour ahead
    cancelled: list[int]
    hop_parent: int
    hop_child: int


def seed(db: Any, now: datetime | None = None) -> Seeded:
    """3 delivered (receipts: 1 delivered, 1 failed, 1 missing), 2 failed, 2 waiting
    (not due), 1 cancelled; a fallback pair; history lines; a grant; a token; a
    heartbeat whose info holds a token by mistake."""
    now = now or datetime.now(UTC)
    p = dialect(db).param
    with db.atomic():
        success = []
        for i, receipt in enumerate(("delivered", "failed", None)):
            sent = now - timedelta(minutes=40 + i)
            success.append(insert(db, template=ORDER, openid=f"o_user{i}", params=PARAMS,
                                  status="success", attempts=1, send_at=sent, sent_at=sent,
                                  created_at=sent, updated_at=sent, msgid=f"3000000000{i}",
                                  receipt=receipt, dedup_key=f"order-{i}"))
        failed = [insert(db, template=ORDER, openid="o_fail", params=PARAMS, status="fail",
                         attempts=5, errcode=47003, error="argument invalid! data.thing2",
                         updated_at=now - timedelta(minutes=5)) for _ in range(2)]
        later = now + timedelta(hours=1)
        waiting = [insert(db, template=ORDER, openid="o_wait", params=PARAMS, send_at=later)
                   for _ in range(2)]
        cancelled = [insert(db, template=ORDER, openid="o_cancel", params=PARAMS,
                            status="cancelled")]
        parent = insert(db, template=ORDER, openid="o_hop", params=PARAMS, status="fail",
                        errcode=43101, error="user refused; fell back to #next")
        child = insert(db, template=ORDER, openid="o_hop", params=PARAMS, status="cancelled",
                       parent_id=parent)
        event(db, success[0], "claimed", "claimed by test-daemon", now - timedelta(minutes=41))
        event(db, success[0], "sent", "accepted, msgid 30000000000", now - timedelta(minutes=40))
        db.execute_sql(f"INSERT INTO subscribe_grant (app, openid, template_id, balance, status,"
                       f" updated_at) VALUES ('default', 'o_user0', {p}, 2, 'accept', {p})",
                       ("zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc", ts(db, now)))
        db.execute_sql(f"INSERT INTO access_token (app, token, expires_at, refreshed_at, "
                       f"refreshed_by) VALUES ('default', {p}, {p}, {p}, 'test-daemon')",
                       (ACCESS_TOKEN, ts(db, now + timedelta(hours=2)), ts(db, now)))
        expiry = (now + timedelta(hours=2)).isoformat()
        info = json.dumps({"tokens": {"default": {"expires_at": expiry, "token": ACCESS_TOKEN}},
                           "alerts": ["app default: token refresh failing"],
                           "access_token": ACCESS_TOKEN, "batch": 100})
        db.execute_sql(f"INSERT INTO herald_daemon (daemon_id, role, host, pid, version, "
                       f"started_at, last_seen, info) VALUES ('host:1:run', 'run', 'host', 1,"
                       f" '1.0', {p}, {p}, {p})", (ts(db, now), ts(db, now), info))
    return Seeded(success, failed, waiting, cancelled, parent, child)


@contextmanager
def console(db: Any, folder: Path, db_url: str, **overrides: Any) -> Iterator[str]:
    """The console app of `serve` on a real waitress listener in this process; yields
    its base URL."""
    from web.console import make_app
    from web.server import Listener, build

    cfg = config_from_dict(console_data(folder, db_url, **overrides), base_dir=folder, env={})
    ctx = build(cfg, db)
    listener = Listener(make_app(ctx), "127.0.0.1", 0, name="console").start()
    try:
        yield listener.url
    finally:
        listener.stop()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, "no csrf_token on the page"
    return m.group(1)


def login(base: str, user: str = "ann", password: str = PASSWORD) -> requests.Session:
    s = requests.Session()
    s.get(base + "/login", timeout=10)
    r = s.post(base + "/login", timeout=30, allow_redirects=False, data={
        "username": user, "password": password,
        "csrf_token": s.cookies.get("herald_login", "")})
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return s


def page_csrf(s: requests.Session, base: str, path: str = "/") -> str:
    return csrf_of(s.get(base + path, timeout=10).text)


__all__ = ["ACCESS_TOKEN", "AES_KEY", "APP_SECRET", "MARKERS", "PASSWORD", "PUSH_TOKEN",
           "USERS", "Seeded", "console", "console_data", "csrf_of", "fresh_db", "insert",
           "login", "page_csrf", "seed"]
