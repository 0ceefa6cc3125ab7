"""What the console tests share: users, marker secrets, a database of each dialect with
every Herald table fresh, sample rows, an in-process console on a real waitress
listener, logging in over HTTP as a browser does, raw HTTP requests (bytes a browser
would never send), the console's WSGI app called directly with the environ waitress
would build, and a snapshot of the state a refused request must leave alone."""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.client import HTTPResponse
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

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
    # `database` may name another URL than the one the console is handed (a password
    # in it is a configured secret like any other)
    return config_data(folder=folder, database=overrides.pop("database", db_url),
                       web={"listen": None}, console=console,
                       apps=overrides.pop("apps", apps), **overrides)


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


# ------------------------------------------------------------------ raw requests


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by \n
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str | None:
        return self.headers.get("location")


def raw_request(base: str, method: str, target: bytes, *, cookie: bytes | str | None = None,
                body: bytes = b"", content_type: bytes | None = b"application/"
                b"x-www-form-urlencoded", headers: dict[bytes, bytes] | None = None,
                timeout: float = 30) -> Answer:
    """One HTTP/1.1 request written byte by byte (requests would quote what a test
    means to send raw), to the listener at `base`."""
    where = urlsplit(base)
    extra = dict(headers or {})
    lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1",
             b"Host: " + where.netloc.encode("ascii"), b"Connection: close"]
    if cookie is not None:
        lines.append(b"Cookie: " + (cookie.encode("latin-1") if isinstance(cookie, str)
                                    else cookie))
    if method in ("POST", "PUT") or body:
        if content_type is not None:
            lines.append(b"Content-Type: " + content_type)
        if b"Content-Length" not in extra:
            lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    lines += [k + b": " + v for k, v in extra.items()]
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        resp = HTTPResponse(sock, method=method)
        resp.begin()
        data = resp.read()
        found: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            found[key] = found[key] + "\n" + value if key in found else value
        return Answer(resp.status, found, data)


# ------------------------------------------------------------------ in process


@dataclass
class InProcess:
    """The console's WSGI app, called directly (no socket): for the property tests,
    which send thousands of requests."""

    app: Any
    session_id: str
    csrf: str
    calls: list[Answer] = field(default_factory=list)

    def __call__(self, method: str, path: bytes, query: bytes = b"", body: bytes = b"",
                 *, cookie: str | None = None, content_type: str = "application/"
                 "x-www-form-urlencoded", content_length: str | None = None) -> Answer:
        """A request as waitress hands it to the app (PEP 3333): the path
        %-decoded, it and the query as latin-1 "native strings"; and the response as
        waitress would send it (header values must be latin-1, or it fails)."""
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"), "REMOTE_ADDR": "127.0.0.1",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "9465", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
            "CONTENT_TYPE": content_type,
            "HTTP_COOKIE": f"herald_session={self.session_id}" if cookie is None else cookie,
        }
        got: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> None:
            for name, value in headers:  # what waitress checks before it sends
                value.encode("latin-1")
                assert "\r" not in value and "\n" not in value, (name, value)
            got["status"], got["headers"] = status, headers

        data = b"".join(self.app(environ, start_response))
        answer = Answer(int(got["status"].split()[0]),
                        {k.lower(): v for k, v in got["headers"]}, data)
        self.calls.append(answer)
        return answer


def in_process(db: Any, folder: Path, db_url: str, role: str = "operator",
               **overrides: Any) -> InProcess:
    from web.console.app import Console
    from web.server import build

    cfg = config_from_dict(console_data(folder, db_url, **overrides), base_dir=folder, env={})
    app = Console(build(cfg, db))
    session_id, session = app.sessions.create("ann", role)
    return InProcess(app, session_id, session.csrf)


# ------------------------------------------------------------------ state


def state_of(db: Any) -> tuple[Any, ...]:
    """What an action could change: every msg_list row's status, attempts, error and
    times, and the history's length. A refused request must leave it as it was."""
    rows = db.execute_sql("SELECT id, status, attempts, errcode, error, send_at, updated_at "
                          "FROM msg_list ORDER BY id").fetchall()
    events = db.execute_sql("SELECT COUNT(*) FROM msg_event").fetchone()[0]
    return tuple(tuple(r) for r in rows), int(events)


def same_origin(location: str | None) -> bool:
    """A Location that stays on this console: an ASCII path, never //host or \\host."""
    return (location is not None and location.isascii() and location.startswith("/")
            and not location.startswith("//") and "\\" not in location
            and not any(c in location for c in "\r\n\t "))


__all__ = ["ACCESS_TOKEN", "AES_KEY", "APP_SECRET", "MARKERS", "PASSWORD", "PUSH_TOKEN",
           "USERS", "Answer", "InProcess", "Seeded", "console", "console_data", "csrf_of",
           "fresh_db", "in_process", "insert", "login", "page_csrf", "raw_request",
           "same_origin", "seed", "state_of"]
