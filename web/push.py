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
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import Counter
from typing import Any

from peewee import Database

import clock
from db.dialects import dialect
from db.outcomes import clean
from web.push_events import PushFormatError, PushMessage, dedup_key, outer, parse_message
from web.wsgi import MAX_BODY, BodyTooLarge, Request, Response, Router, WSGIApp, text
from web.wxcrypto import PushCipher, PushCryptoError, check_signature

log = logging.getLogger("herald.push")

SUCCESS = text("success")
SMS_OK = Response(200, b'{"result":0,"errmsg":"OK"}', "application/json")
PUSH_COLUMNS = ("app", "source", "kind", "openid", "dedup_key", "payload", "received_at")
MAX_SMS_REPORTS = 500  # per callback; Tencent batches, but not thousands


class Refused(Exception):
    """A push that is not stored; `cause` is a short fixed phrase (metrics label)."""

    def __init__(self, status: int, cause: str) -> None:
        super().__init__(cause)
        self.status = status
        self.cause = cause


class PushReceiver:
    """The receiver's state: per-app ciphers, counters of what came in."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.db: Database = ctx.db
        self.counts: Counter[str] = Counter()  # stored / duplicate / refused:<cause>
        self._lock = threading.Lock()
        self._ciphers: dict[str, PushCipher] = {}
        for name, app in self.config.apps.items():
            if app.push is not None and app.push.aes_key is not None and app.appid:
                self._ciphers[name] = PushCipher(app.push.aes_key.reveal(), app.appid)

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
        try:
            name, app = self._app(req)
            message = self._verified_message(req, app, name)
        except Refused as exc:
            return self._refused(req, exc)
        stored = self._store(name, "wechat", message.event or message.msg_type,
                             message.from_user, f"wx:{name}:{dedup_key(message)}",
                             _payload(message))
        self.count("stored" if stored else "duplicate")
        self.ctx.wake()
        return SUCCESS

    def _verified_message(self, req: Request, app: Any, name: str) -> PushMessage:
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
                plain = cipher.decrypt(encrypted)  # checks the appid inside
                return parse_message(plain)
            if app.push.aes_key is not None:
                # the app is set to safe mode: a plaintext push did not come from WeChat
                raise Refused(400, "plaintext push to a safe-mode app")
            if not check_signature(q.get("signature"), token, timestamp, nonce):
                raise Refused(403, "bad signature")
            return parse_message(body)
        except PushCryptoError as exc:
            raise Refused(400, _short(exc.reason)) from None
        except PushFormatError as exc:
            raise Refused(400, _short(exc.reason)) from None

    # ---- Tencent Cloud SMS

    def sms_status(self, req: Request) -> Response:
        sms = self.config.sms
        given = req.params.get("token", "")
        expected = sms.callback_token.reveal() if sms and sms.callback_token else None
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return self._refused(req, Refused(404, "unknown callback"))
        try:
            try:
                body = req.body(MAX_BODY)
            except BodyTooLarge:
                raise Refused(413, "body over 64 KiB") from None
            reports = _sms_reports(body)
        except Refused as exc:
            self._refused(req, exc)
            return Response(exc.status, json.dumps(
                {"result": 1, "errmsg": exc.cause}).encode(), "application/json")
        for report in reports:
            key = (f"sms:{report['sid']}:{report.get('report_status')}:"
                   f"{report.get('user_receive_time')}")
            stored = self._store("sms", "sms", "sms_status", None, key[:191],
                                 json.dumps(report, ensure_ascii=False))
            self.count("stored" if stored else "duplicate")
        self.ctx.wake()
        return SMS_OK

    # ---- shared

    def _store(self, app: str | None, source: str, kind: str, openid: str | None,
               key: str, payload: str) -> bool:
        """Insert the event unless its dedup_key is there; True if it was new."""
        d = dialect(self.db)
        now = d.ts(clock.now())
        # waitress's threads live as long as the server: each keeps its connection
        # (opening one per push would cost more than the insert)
        self.db.connect(reuse_if_open=True)
        with self.db.atomic():
            cur = self.db.execute_sql(
                d.insert_ignore("push_event", PUSH_COLUMNS, "dedup_key"),
                (None if app == "sms" else app, source, kind[:64],
                 openid[:128] if openid else None, key, payload, now))
            return bool(cur.rowcount == 1)

    def _refused(self, req: Request, exc: Refused) -> Response:
        self.count(f"refused:{exc.cause}")
        # one line, no payload, no query values (they carry signatures)
        log.warning("push refused (%d %s) from %s on %s", exc.status, exc.cause,
                    _peer(req), req.path if not req.path.startswith("/tencent/") else
                    "/tencent/sms/status/<token>")
        return text(f"{exc.cause}\n", exc.status)


def _short(reason: str) -> str:
    return clean(reason, 80)


def _peer(req: Request) -> str:
    # behind the TLS proxy the client's address is in X-Forwarded-For, which the proxy
    # sets; it is only shown in a log line, never trusted for anything
    forwarded = req.header("X-Forwarded-For")
    return clean(forwarded.split(",")[0].strip(), 45) if forwarded else req.remote


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
        for key in ("report_status", "errmsg", "description", "user_receive_time",
                    "mobile", "nationcode"):
            value = item.get(key)
            if value is not None:
                report[key] = clean(str(value), 200)
        out.append(report)
    return out


def make_app(ctx: Any) -> WSGIApp:
    receiver = PushReceiver(ctx)
    ctx.push_receiver = receiver  # the heartbeat reports its counters
    router = Router()
    router.add("/wechat/push", GET=receiver.handshake, POST=receiver.push)
    router.add("/wechat/push/<app>", GET=receiver.handshake, POST=receiver.push)
    router.add("/tencent/sms/status/<token>", POST=receiver.sms_status)
    router.add("/healthz", GET=lambda req: text("ok\n"))
    return router


__all__ = ["PushReceiver", "Refused", "make_app"]
