"""The console as one WSGI app: the guard every request passes, then a page.

Order for each request: decode the path (UTF-8 or 400); /static/ and /login are open;
everything else needs a session (a guest is sent to /login); a POST needs the session's
CSRF token, and an action the operator role. Whatever a handler raises becomes a page
with a status and a message: 400/403/404 for the request's fault, 503 when the
database cannot be reached, 500 (logged with its traceback, never shown) for a bug.
Every page goes out with a strict CSP and no-store, and is checked for the configured
secrets on the way, whole or cut short, as is or encoded; so is each redirect's
Location, and each one is registered with the log redaction (scrub.py: a last line of
defence, no page selects them in the first place).
"""

from __future__ import annotations

import logging
import re
import secrets as random
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from peewee import DatabaseError, InterfaceError, OperationalError

import clock
from logs import add_secret, redact
from web.console import actions, auth, overview, pages
from web.console.http import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Refused,
    Req,
    context,
    cookie,
    html,
    redirect,
)
from web.console.inputs import (
    BadInput,
    NotFound,
    native_to_text,
    query_of,
    redirect_target,
    text,
)
from web.console.render import Renderer
from web.console.scrub import LOG_SCRUB, Scrubber, configured_secrets, forms
from web.wsgi import Environ, Response, StartResponse

log = logging.getLogger("herald.console")

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                ".png": "image/png", ".ico": "image/x-icon"}
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]

Handler = Callable[[Req], Response]


class Console:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.db = ctx.db
        self.renderer = Renderer()
        self.sessions = auth.SessionStore(self.cfg.console.session_ttl)
        self.limiter = auth.LoginLimiter()
        self.accounts = auth.accounts(self.cfg.console.users)
        self.cache = overview.SnapshotCache(self._snapshot)
        self._scrubbed_for: object = None
        self._scrubber = Scrubber(())
        _ = self.scrubber  # the log redaction knows the secrets before the first request
        LOG_SCRUB.watch(self)
        self.static = {p.name: p for p in STATIC.iterdir() if p.suffix in STATIC_TYPES}
        page = pages.Pages(self)
        act = actions.Actions(self)
        # (pattern, method -> handler, operator only)
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler], bool]] = [
            (re.compile(r"/"), {"GET": page.overview}, False),
            (re.compile(r"/messages"), {"GET": page.messages}, False),
            (re.compile(r"/messages/(?P<id>[^/]{1,40})"), {"GET": page.message}, False),
            (re.compile(r"/failures"), {"GET": page.failures}, False),
            (re.compile(r"/templates"), {"GET": page.templates}, False),
            (re.compile(r"/grants"), {"GET": page.grants}, False),
            (re.compile(r"/daemons"), {"GET": page.daemons}, False),
            (re.compile(r"/logout"), {"POST": self.logout}, False),
            (re.compile(r"/actions/retry"), {"POST": act.retry}, True),
            (re.compile(r"/actions/cancel"), {"POST": act.cancel}, True),
        ]

    # ------------------------------------------------------------- WSGI

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        req: Req | None = None
        try:
            req = Req(environ, native_to_text(str(environ.get("PATH_INFO", "/")) or "/",
                                              "path"), {})
            req.query = query_of(environ)
            resp = self.dispatch(req)
        except (BadInput, NotFound) as exc:
            resp = self.error(req, exc.status, str(exc))
        except Refused as exc:
            resp = self.error(req, exc.status, str(exc))
        except (OperationalError, InterfaceError) as exc:
            log.error("console: the database did not answer: %s", redact(str(exc))[:300])
            resp = self.error(req, 503, "the database could not answer (unreachable, busy, "
                              "or its schema is not what this Herald expects); the serve log "
                              "has the details / 数据库暂时无法应答")
        except Exception as exc:  # noqa: BLE001 - a bug must not show a traceback
            ref = uuid.uuid4().hex[:8]
            kind = "database error" if isinstance(exc, DatabaseError) else "bug"
            log.exception("console: %s on %s %s (ref %s)", kind,
                          environ.get("REQUEST_METHOD"), redact(str(environ.get("PATH_INFO"))
                                                               )[:200], ref)
            resp = self.error(req, 500, f"something went wrong on our side (ref {ref}); "
                              "the serve log has the details / 服务器内部错误")
        resp = self.finish(resp)
        took = time.monotonic() - started
        if took > 1.0:
            log.info("console: %s %s took %.2f s", environ.get("REQUEST_METHOD"),
                     redact(str(environ.get("PATH_INFO")))[:200], took)
        return resp(environ, start_response)

    def dispatch(self, req: Req) -> Response:
        if req.path.startswith("/static/"):
            return self.serve_static(req)
        if req.path == "/login":
            if req.method == "POST":
                return self.login_post(req)
            if req.method in ("GET", "HEAD"):
                return self.login_form(req)
            raise Refused("method not allowed", 405)
        req.session = self.sessions.get(req.cookies().get(SESSION_COOKIE))
        if req.session is None:
            # a guest sees nothing but the login page; a GET comes back here after it
            target = req.target if req.method == "GET" else "/"
            return redirect("/login" + ("" if target == "/" else "?next=" + quote(target,
                                                                                   safe="/")))
        for pattern, methods, operator_only in self.routes:
            m = pattern.fullmatch(req.path)
            if m is None:
                continue
            handler = methods.get("GET" if req.method == "HEAD" else req.method)
            if handler is None:
                raise Refused("method not allowed", 405)
            req.params = m.groupdict()
            if req.method == "POST":
                self.check_csrf(req)
                if operator_only and not req.session.operator:
                    log.warning("console: %s (viewer) refused %s from %s", req.session.user,
                                req.path, req.remote)
                    raise Refused("this needs the operator role; you are a viewer / "
                                  "需要 operator 角色")
            return handler(req)
        raise NotFound("no such page / 页面不存在")

    def check_csrf(self, req: Req) -> None:
        assert req.session is not None
        if not auth.tokens_equal(req.form().get("csrf_token"), req.session.csrf):
            log.warning("console: %s: POST %s without a valid CSRF token from %s",
                        req.session.user, req.path, req.remote)
            raise Refused("the form's CSRF token is missing or wrong; reload the page and "
                          "try again / 表单已失效，请刷新页面重试")

    def finish(self, resp: Response) -> Response:
        headers = [h for h in resp.headers if h[0].lower() != "cache-control"]
        cache = next((v for k, v in resp.headers if k.lower() == "cache-control"), "no-store")
        resp.headers = [*headers, ("Cache-Control", cache), *SECURITY_HEADERS]
        scrub = self.scrubber
        if resp.content_type.startswith("text/html") and scrub:
            clean = scrub(resp.body)
            if clean != resp.body:
                log.error("console: a page held a configured secret; it was masked")
                resp.body = clean
        for i, (name, value) in enumerate(resp.headers):
            if name.lower() == "location" and scrub.holds(value):
                # a back= or a guest's address that names a secret: the browser goes
                # home instead of carrying the secret in its history and logs
                log.error("console: a redirect held a configured secret; sent to / instead")
                resp.headers[i] = (name, "/")
        return resp

    @property
    def scrubber(self) -> Scrubber:
        """The scrub for the secrets configured now: templates may be reloaded (SIGHUP)
        with a new webhook secret."""
        current = self.ctx.templates.current
        if current is not self._scrubbed_for:
            found = configured_secrets(self.cfg, current)
            for secret in found:
                for form in forms(secret):  # every log line masks them too
                    add_secret(form)
            self._scrubber = Scrubber(found)
            self._scrubbed_for = current
        return self._scrubber

    def error(self, req: Req | None, status: int, message: str) -> Response:
        if req is None:
            req = Req({}, "/", {})
        body = self.renderer.page("error.html", **context(req, title=f"{status}",
                                                          status=status, message=message))
        return html(body, status)

    # ------------------------------------------------------------- login

    def login_form(self, req: Req, *, message: str = "", status: int = 200,
                   username: str = "", target: str | None = None) -> Response:
        token = random.token_urlsafe(24)
        body = self.renderer.page("login.html", **context(
            req, title="Log in / 登录", message=message, login_csrf=token, username=username,
            next=target or redirect_target(req.query.get("next"), "next")))
        return html(body, status, [("Set-Cookie", cookie(
            LOGIN_COOKIE, token, max_age=3600, secure=self.cfg.console.cookie_secure,
            path="/login"))])

    def login_post(self, req: Req) -> Response:
        form = req.form()
        # every field read before anything is counted or created: a malformed one is a
        # 400 that changes nothing
        target = redirect_target(form.get("next"), "next")
        if not auth.tokens_equal(form.get("csrf_token"), req.cookies().get(LOGIN_COOKIE, "")):
            log.warning("console: login POST without a valid CSRF token from %s", req.remote)
            return self.login_form(req, status=403, target=target,
                                   message="the login form expired or came from elsewhere; "
                                           "try again / 登录表单已失效，请重试")
        username = (text(form, "username", limit=64) or "")
        password = form.get("password", "")
        # checked and counted in one step: a check in flight counts against the limit
        attempt = self.limiter.attempt(username.lower(), req.remote)
        if isinstance(attempt, str):
            log.warning("console: login for %s from %s refused: rate limited",
                        self._who(username), req.remote)
            return self.login_form(req, status=429, message=attempt, username=username,
                                   target=target)
        account = auth.authenticate(self.accounts, username, password) if password else None
        if account is None:
            self.limiter.failed(attempt)
            log.warning("console: failed login for %s from %s", self._who(username),
                        req.remote)
            return self.login_form(req, status=401, username=username, target=target,
                                   message="wrong user name or password / 用户名或密码错误")
        self.limiter.succeeded(attempt)
        self.sessions.drop(req.cookies().get(SESSION_COOKIE))  # no session fixation
        session_id, _ = self.sessions.create(account.name, account.role)
        log.info("console: %s (%s) logged in from %s", account.name, account.role, req.remote)
        return redirect(target, [
            ("Set-Cookie", cookie(SESSION_COOKIE, session_id,
                                  max_age=int(self.cfg.console.session_ttl),
                                  secure=self.cfg.console.cookie_secure)),
            ("Set-Cookie", cookie(LOGIN_COOKIE, "", max_age=0,
                                  secure=self.cfg.console.cookie_secure, path="/login"))])

    def _who(self, username: str) -> str:
        """A login's user name for the log: a configured one as it is; any other only
        by its length (people type passwords into the user box)."""
        if username in self.accounts:
            return repr(username)
        return f"an unknown user name ({len(username)} characters)"

    def logout(self, req: Req) -> Response:
        assert req.session is not None
        self.sessions.drop(req.cookies().get(SESSION_COOKIE))
        log.info("console: %s logged out", req.session.user)
        return redirect("/login", [("Set-Cookie", cookie(
            SESSION_COOKIE, "", max_age=0, secure=self.cfg.console.cookie_secure))])

    # ------------------------------------------------------------- static

    def serve_static(self, req: Req) -> Response:
        name = req.path[len("/static/"):]
        path = self.static.get(name)  # a fixed list: no path is ever joined from input
        if path is None or req.method not in ("GET", "HEAD"):
            raise NotFound("no such file")
        return Response(200, path.read_bytes(), STATIC_TYPES[path.suffix],
                        [("Cache-Control", "private, max-age=3600")])

    # ------------------------------------------------------------- data

    def _snapshot(self) -> overview.Snapshot:
        with self.db.connection_context():
            return overview.take(self.db, clock.now(),
                                 missing_after=self.cfg.receipts.missing_after)


__all__ = ["Console", "configured_secrets"]
