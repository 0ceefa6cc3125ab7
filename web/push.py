"""The push receiver: what the internet sends Herald, stored first, applied after.

- GET  /wechat/push[/<app>]: WeChat's echostr handshake (signature over Token,
  timestamp, nonce).
- POST /wechat/push[/<app>]: a message push (消息推送) in plaintext mode (`signature`),
  or compatible/safe mode (`encrypt_type=aes`: `msg_signature` over Token, timestamp,
  nonce and Encrypt; AES-256-CBC; the appid inside must be the app's). XML or JSON.
- POST /tencent/sms/status/<callback_token>: Tencent Cloud SMS delivery reports.

A push is verified, parsed, stored in push_event (its dedup_key makes WeChat's retries
a no-op) and answered `success` at once; the events applier (jobs/events.py) is woken
to turn it into receipts and grants. Anything forged, foreign, oversized or malformed
gets a 4xx, one log line without its payload, and stores nothing. Every comparison of
a secret value is constant time.

Replays. A POST whose `timestamp` is more than web.push_max_age from now, either way,
is refused as `stale`. In plaintext mode the signature does not cover the body, so the
(app, timestamp, nonce) of each push is kept with its body's hash (db/inbox.py,
push_nonce, shared by every `serve` on the database): the same body again is WeChat's
retry (stored once, answered success), another body is refused as `forged`. Safe mode's
msg_signature covers the ciphertext, so there a replay can only repeat the push.

The refusal causes are the label values of herald_push_events_total{result} as
`refused:<cause>`; the ones an alert may watch: `stale`, `forged`, `unstorable` (a
NUL, a lone surrogate, a value longer than its column: refused alike on every engine).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from peewee import Database

import clock
from db.inbox import (
    KIND_MAX,
    MSGID_MAX,
    NONCE_MAX,
    OPENID_MAX,
    TEMPLATE_ID_MAX,
    Forged,
    InboxEvent,
    Nonce,
    purge_nonces,
    store,
    unstorable,
)
from db.outcomes import clean
from logs import add_secret
from web.push_events import PushFormatError, PushMessage, dedup_key, outer, parse_message
from web.wsgi import (
    MAX_BODY,
    BodyTooLarge,
    Request,
    Response,
    Router,
    WSGIApp,
    loggable,
    text,
)
from web.wxcrypto import PushCipher, PushCryptoError, check_signature

log = logging.getLogger("herald.push")

SUCCESS = text("success")
SMS_OK = Response(200, b'{"result":0,"errmsg":"OK"}', "application/json")
MAX_SMS_REPORTS = 500  # per callback; Tencent batches, but not thousands
PURGE_EVERY = 60.0  # seconds between purges of push_nonce rows outside the window
_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() takes other scripts'

# The refusal causes an alert may watch (herald_push_events_total{result="refused:..."}).
STALE = "stale"  # a timestamp outside web.push_max_age: a replay, or a clock far off
FORGED = "forged"  # a plaintext (app, timestamp, nonce) seen with another body
UNSTORABLE = "unstorable"  # a value some engine cannot store


class Refused(Exception):
    """A push that is not stored; `cause` is a short fixed phrase (metrics label),
    `detail` what the log line adds (never payload bytes)."""

    def __init__(self, status: int, cause: str, detail: str | None = None) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause
        self.detail = detail


class PushReceiver:
    """The receiver's state: per-app ciphers, counters of what came in."""

    def __init__(self, ctx: Any, *, now: Callable[[], datetime] = clock.now) -> None:
        self.ctx = ctx
        self.now = now  # the clock the timestamp window is judged by
        self.config = ctx.config
        self.db: Database = ctx.db
        self.counts: Counter[str] = Counter()  # stored / duplicate / refused:<cause>
        self._lock = threading.Lock()
        self.max_age = float(self.config.web.push_max_age)
        self._purged = 0.0  # time.monotonic() of the last purge of push_nonce
        self._ciphers: dict[str, PushCipher] = {}
        for name, app in self.config.apps.items():
            if app.push is not None:
                # every log line and error text masks them from now on
                add_secret(app.push.token.reveal())
                if app.push.aes_key is not None:
                    add_secret(app.push.aes_key.reveal())
            if app.push is not None and app.push.aes_key is not None and app.appid:
                self._ciphers[name] = PushCipher(app.push.aes_key.reveal(), app.appid)
        sms = self.config.sms
        if sms is not None and sms.callback_token is not None:
            add_secret(sms.callback_token.reveal())

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    # ---- WeChat

    def _app(self, req: Request) -> tuple[str, Any]:
        name = req.params.get("app", "default")
        app = self.config.apps.get(name)
        if app is None or app.push is None:
            raise Refused(404, "unknown app")  # say nothing about which apps exist
        return name, app

    def handshake(self, req: Request) -> Response:
        try:
            name, app = self._app(req)
            q = req.query
            if not check_signature(q.get("signature"), app.push.token.reveal(),
                                   q.get("timestamp"), q.get("nonce")):
                raise Refused(403, "bad signature")
            echostr = q.get("echostr", "")
            if not echostr or len(echostr) > 128:
                raise Refused(400, "bad echostr")
        except Refused as exc:
            return self._refused(req, exc)
        log.info("push handshake for app %s answered", name)
        return text(echostr)

    def push(self, req: Request) -> Response:
        now = self.now()
        try:
            name, app = self._app(req)
            message, nonce = self._verified_message(req, app, name, now)
            # first the parsed values (the dedup key hashes them as UTF-8), then the row
            if (why := _message_problem(message)) is not None:
                raise Refused(400, UNSTORABLE, why)
            event = InboxEvent(name, "wechat", message.event or message.msg_type,
                               message.from_user, f"wx:{name}:{dedup_key(message)}",
                               _payload(message))
            if (why := event.problem()) is not None:
                raise Refused(400, UNSTORABLE, why)
            try:
                stored = store(self.db_connected(), [event], now, nonce)
            except Forged:
                raise Refused(403, FORGED, "this timestamp and nonce came with another "
                                           "body") from None
        except Refused as exc:
            return self._refused(req, exc)
        self.count("stored" if stored else "duplicate")
        if nonce is not None:
            self._purge_nonces(now)
        self.ctx.wake()
        return SUCCESS

    def db_connected(self) -> Database:
        # waitress's threads live as long as the server: each keeps its connection
        # (opening one per push would cost more than the insert)
        self.db.connect(reuse_if_open=True)
        return self.db

    def _fresh(self, timestamp: str | None, now: datetime) -> int:
        """The push's timestamp, if it is inside web.push_max_age of now."""
        if timestamp is None or not _SECONDS.fullmatch(timestamp):
            raise Refused(403, STALE, "timestamp is not a number of seconds")
        ts = int(timestamp)
        off = ts - now.timestamp()
        if abs(off) > self.max_age:
            raise Refused(403, STALE, f"timestamp is {abs(off):.0f} s "
                                      f"{'ahead of' if off > 0 else 'behind'} this clock "
                                      f"(web.push_max_age: {self.max_age:.0f} s)")
        return ts

    def _purge_nonces(self, now: datetime) -> None:
        mono = time.monotonic()
        with self._lock:
            if mono - self._purged < PURGE_EVERY:
                return
            self._purged = mono
        try:
            # twice the window: another serve's clock may be a little behind this one's
            purge_nonces(self.db_connected(), int(now.timestamp() - 2 * self.max_age))
        except Exception as exc:  # noqa: BLE001 - the push is stored; purge next time
            log.warning("push_nonce purge failed: %s", clean(str(exc), 200))

    def _verified_message(self, req: Request, app: Any, name: str, now: datetime
                          ) -> tuple[PushMessage, Nonce | None]:
        """The push, verified and parsed; with the Nonce to claim in plaintext mode."""
        try:
            body = req.body(MAX_BODY)
        except BodyTooLarge:
            raise Refused(413, "body over 64 KiB") from None
        q = req.query
        token = app.push.token.reveal()
        timestamp, nonce = q.get("timestamp"), q.get("nonce")
        try:
            if q.get("encrypt_type") == "aes":
                cipher = self._ciphers.get(name)
                if cipher is None:
                    raise Refused(400, "encrypted push but no aes_key configured")
                wrapper = outer(body)
                encrypted = wrapper.get("Encrypt")
                if not isinstance(encrypted, str) or not encrypted:
                    raise Refused(400, "no Encrypt field")
                if not check_signature(q.get("msg_signature"), token, timestamp, nonce,
                                       encrypted):
                    raise Refused(403, "bad msg_signature")
                self._fresh(timestamp, now)
                plain = cipher.decrypt(encrypted)  # checks the appid inside
                return parse_message(plain), None
            if app.push.aes_key is not None:
                # the app is set to safe mode: a plaintext push did not come from WeChat
                raise Refused(400, "plaintext push to a safe-mode app")
            if not check_signature(q.get("signature"), token, timestamp, nonce):
                raise Refused(403, "bad signature")
            ts = self._fresh(timestamp, now)
            if nonce is None or not nonce or (why := unstorable(nonce, NONCE_MAX)):
                raise Refused(400, UNSTORABLE, f"nonce {why or 'is empty'}")
            return parse_message(body), Nonce.of(name, ts, nonce, body)
        except PushCryptoError as exc:
            raise Refused(400, _short(exc.reason)) from None
        except PushFormatError as exc:
            raise Refused(400, _short(exc.reason)) from None

    # ---- Tencent Cloud SMS

    def sms_status(self, req: Request) -> Response:
        sms = self.config.sms
        given = req.params.get("token", "")
        expected = sms.callback_token.reveal() if sms and sms.callback_token else None
        if expected is None or not hmac.compare_digest(given.encode("utf-8", "replace"),
                                                       expected.encode()):
            return self._refused(req, Refused(404, "unknown callback"))
        try:
            try:
                body = req.body(MAX_BODY)
            except BodyTooLarge:
                raise Refused(413, "body over 64 KiB") from None
            events = []
            for report in _sms_reports(body):
                key = (f"sms:{report['sid']}:{report.get('report_status')}:"
                       f"{report.get('user_receive_time')}")
                event = InboxEvent(None, "sms", "sms_status", None, key[:191],
                                   json.dumps(report, ensure_ascii=False))
                if (why := event.problem()) is not None:
                    raise Refused(400, UNSTORABLE, f"a report's {why}")
                events.append(event)
        except Refused as exc:
            self._refused(req, exc)
            return Response(exc.status, json.dumps(
                {"result": 1, "errmsg": exc.cause}).encode(), "application/json")
        # the whole batch in one transaction: stored whole or not at all
        new = store(self.db_connected(), events, self.now())
        self.count_many(stored=new, duplicate=len(events) - new)
        self.ctx.wake()
        return SMS_OK

    def count_many(self, **counts: int) -> None:
        with self._lock:
            for what, n in counts.items():
                if n:
                    self.counts[what] += n

    # ---- shared

    def _refused(self, req: Request, exc: Refused) -> Response:
        self.count(f"refused:{exc.cause}")
        # one line, no payload, no query values (they carry signatures), no callback token
        log.warning("push refused (%d %s%s) from %s on %s", exc.status, exc.cause,
                    f": {clean(exc.detail, 160)}" if exc.detail else "", _peer(req),
                    loggable(clean(req.path, 200)))
        return text(f"{exc.cause}\n", exc.status)


def _short(reason: str) -> str:
    return clean(reason, 80)


def _peer(req: Request) -> str:
    # behind the TLS proxy the client's address is in X-Forwarded-For, which the proxy
    # sets; it is only shown in a log line, never trusted for anything
    forwarded = req.header("X-Forwarded-For")
    return clean(forwarded.split(",")[0].strip(), 45) if forwarded else req.remote


def _message_problem(m: PushMessage) -> str | None:
    """The first field of the push that no engine could store alike, and why."""
    fields: list[tuple[str, str | None, int | None]] = [
        ("ToUserName", m.to_user, None), ("FromUserName", m.from_user, OPENID_MAX),
        ("MsgType", m.msg_type, KIND_MAX), ("Event", m.event, KIND_MAX)]
    for item in m.items:
        fields += [("TemplateId", item.template_id, TEMPLATE_ID_MAX),
                   ("MsgID", item.msgid, MSGID_MAX), ("status", item.status, None),
                   ("PopupScene", item.popup_scene, None),
                   ("ErrorStatus", item.error_status, None)]
    for name, value, limit in fields:
        if value is not None and (why := unstorable(value, limit)) is not None:
            return f"{name} {why}"
    return None


def _payload(message: PushMessage) -> str:
    return json.dumps({
        "to_user": message.to_user, "create_time": message.create_time,
        "msg_type": message.msg_type, "event": message.event,
        "items": [{"template_id": i.template_id, "status": i.status,
                   "popup_scene": i.popup_scene, "msgid": i.msgid,
                   "error_code": i.error_code, "error_status": i.error_status}
                  for i in message.items],
    }, ensure_ascii=False)


def _sms_reports(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(400, "not JSON") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or len(data) > MAX_SMS_REPORTS:
        raise Refused(400, "not a list of reports")
    out = []
    for item in data:
        if not isinstance(item, dict):
            raise Refused(400, "a report is not an object")
        sid = item.get("sid")
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            raise Refused(400, "a report has no sid")
        report = {"sid": sid}
        for key in ("sid", "report_status", "errmsg", "description", "user_receive_time",
                    "mobile", "nationcode"):
            value = item.get(key)
            if value is None:
                continue
            value = value if isinstance(value, str) else str(value)
            if (why := unstorable(value)) is not None:  # a NUL, "\ud800": the batch goes
                raise Refused(400, UNSTORABLE, f"a report's {key} {why}")
            if key != "sid":
                report[key] = clean(value, 200)
        out.append(report)
    return out


def make_app(ctx: Any, *, now: Callable[[], datetime] = clock.now) -> WSGIApp:
    receiver = PushReceiver(ctx, now=now)
    ctx.push_receiver = receiver  # the heartbeat reports its counters
    router = Router()
    router.add("/wechat/push", GET=receiver.handshake, POST=receiver.push)
    router.add("/wechat/push/<app>", GET=receiver.handshake, POST=receiver.push)
    router.add("/tencent/sms/status/<token>", POST=receiver.sms_status)
    router.add("/healthz", GET=lambda req: text("ok\n"))
    return router


__all__ = ["PushReceiver", "Refused", "make_app"]
