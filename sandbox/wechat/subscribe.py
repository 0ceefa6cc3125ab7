"""Subscribe messages: POST /cgi-bin/message/subscribe/send, judged with WeChat's checks
in WeChat's order (token, openid, subscription, template, page, state, lang, data and
the keyword rules), 43108 for a second send to a user while one is in flight, and the
subscribe_msg_sent_event pushed after each accepted send.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import keywords
from sandbox.serving import Handler, loads
from sandbox.wechat.core import ERRMSGS, Attempt, Core, errcode
from sandbox.wechat.faults import Faults
from sandbox.wechat.library import TemplateLibrary
from sandbox.wechat.pushers import Pushers
from sandbox.wechat.tokens import Tokens

VALID_STATES = frozenset({"developer", "trial", "formal"})
VALID_LANGS = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})
# What a subscribe_msg_sent_event reports for an openid told to fail delivery when the
# test names nothing: WeChat documents only ErrorCode 0 = success.
DELIVERY_FAILURE = (10001, "fail: system error")


class SubscribeSend:
    def __init__(self, core: Core, tokens: Tokens, library: TemplateLibrary, faults: Faults,
                 pushers: Pushers) -> None:
        self.core = core
        self.tokens = tokens
        self.library = library
        self.faults = faults
        self.pushers = pushers
        self._unsubscribed: set[str] = set()
        self._inflight: set[str] = set()
        self._fail_delivery: dict[str, tuple[int, str]] = {}
        # hold(): sends to these openids wait at the door until release()
        self._held: set[str] = set()
        self._gate = threading.Condition(core.lock)

    # --- control -------------------------------------------------------------------------

    def unsubscribe(self, openid: str) -> None:
        with self.core.lock:
            self._unsubscribed.add(openid)

    def fail_delivery(self, openid: str, error_code: int = DELIVERY_FAILURE[0],
                      error_status: str = DELIVERY_FAILURE[1]) -> None:
        """Subscribe sends to this openid are accepted, but their sent event reports this
        failure."""
        with self.core.lock:
            self._fail_delivery[openid] = (int(error_code), str(error_status))

    def hold(self, openid: str) -> None:
        """Sends to `openid` arrive (and are recorded as received) but wait there, before
        any latency or judgement, until release(): a test can act while WeChat holds the
        request."""
        with self.core.lock:
            self._held.add(openid)

    def release(self, openid: str | None = None) -> None:
        """Let held sends (to `openid`, or all) go on."""
        with self.core.lock:
            if openid is None:
                self._held.clear()
            else:
                self._held.discard(openid)
            self._gate.notify_all()

    def wake_all(self) -> None:
        """The sandbox stops: held sends see core.release and go on."""
        with self.core.lock:
            self._gate.notify_all()

    # --- records -------------------------------------------------------------------------

    def accepted_count(self, openid: str | None = None) -> int:
        with self.core.lock:
            if openid is None:
                return len(self.core.records.accepted)
            return self.core.records.by_openid[openid]

    def concurrency_violations(self) -> int:
        """43108 answers the sandbox gave on its own judgement (injected 43108s excluded).

        Injected ones are left out because this counter exists to catch Herald sending to
        one user concurrently; a test that injects 43108 to exercise retries is not that.
        """
        with self.core.lock:
            return self.core.records.violations

    # --- the endpoint --------------------------------------------------------------------

    def serve(self, http: Handler, method: str, query: dict[str, str], body: bytes) -> None:
        if method != "POST":
            http.reply_json(errcode(43002))
            return
        core = self.core
        at = time.monotonic()
        msg = loads(body)
        self._arrive(msg, at)
        touser = msg.get("touser") if isinstance(msg, dict) else None
        template_id = msg.get("template_id") if isinstance(msg, dict) else None
        fault = self.faults.take(touser if isinstance(touser, str) else None)
        latency = core.latency
        lose = fault == "lost_answer"
        if fault is not None and not lose:
            self.faults.answer(http, fault, touser, template_id, at, latency)
            return
        err, errmsg = self._judge(query.get("access_token"), msg)
        if err:
            if latency > 0:
                time.sleep(latency)
            core.record(touser, template_id, err, None, at)
            http.reply_json({"errcode": err, "errmsg": errmsg})
            return
        assert isinstance(msg, dict) and isinstance(touser, str)  # _judge checked both
        # Only a send that would otherwise succeed takes the user's slot, and it keeps it
        # through the latency, which is what makes an overlapping second send a 43108.
        if not self._enter(touser):
            if latency > 0:
                time.sleep(latency)
            core.record(touser, template_id, 43108, None, at, violation=True)
            http.reply_json(errcode(43108))
            return
        # the app, for its push; taken now: the accept below may expire every token
        appid = (self.tokens.app_of(query.get("access_token"))[1]
                 if self.pushers.any_app() else None)
        try:
            if latency > 0:
                time.sleep(latency)
            msgid = self._accept(msg, at)
        finally:
            self._leave(touser)
        if appid is not None:
            self._push_sent_event(appid, msg, msgid)
        if lose:
            self.faults.lose_answer(http)
            return
        # json.dumps of a Python int writes every digit; a float would round past 2**53.
        http.reply(200, b'{"errcode":0,"errmsg":"ok","msgid":%d}' % msgid)

    # --- judging and accepting -----------------------------------------------------------

    def _arrive(self, msg: Any, at: float) -> None:
        touser = msg.get("touser") if isinstance(msg, dict) else None
        record = {"touser": touser if isinstance(touser, str) else None,
                  "template_id": msg.get("template_id") if isinstance(msg, dict) else None,
                  "data": msg.get("data") if isinstance(msg, dict) else None, "at": at}
        with self.core.lock:
            self.core.records.received.append(record)
            while (isinstance(touser, str) and touser in self._held
                   and not self.core.release.is_set()):
                self._gate.wait(0.5)

    def _judge(self, token: str | None, msg: Any) -> tuple[int, str]:
        """Everything WeChat checks before sending, in its order. (0, 'ok') if it passes."""
        now = self.core.clock()
        with self.core.lock:
            err, _ = self.tokens.app_of_locked(token, now)
            if err:
                return err, ERRMSGS[err]
            if not isinstance(msg, dict):
                return 47001, ERRMSGS[47001]
            touser = msg.get("touser")
            if not isinstance(touser, str) or not touser:
                return 40003, ERRMSGS[40003]
            if touser in self._unsubscribed:
                return 43101, ERRMSGS[43101]
        # The rest reads only configuration fixed at construction, so no lock.
        template_id = msg.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            return 40037, ERRMSGS[40037]
        template_keys = None
        templates = self.library.templates
        if templates is not None:
            template_keys = templates.get(template_id)
            if template_keys is None:
                return 40037, ERRMSGS[40037]
        page = msg.get("page")
        if page is not None and page != "":
            if not isinstance(page, str) or self.core.page_unknown(page):
                return 41030, ERRMSGS[41030]
        state = msg.get("miniprogram_state")
        if state is not None and state not in VALID_STATES:
            return 47003, "argument invalid! miniprogram_state invalid"
        lang = msg.get("lang")
        if lang is not None and lang not in VALID_LANGS:
            return 47003, "argument invalid! lang invalid"
        data = msg.get("data")
        if not isinstance(data, dict) or not data:
            return 47003, "argument invalid! data invalid"
        if template_keys is not None:
            missing = [key for key in template_keys if key not in data]
            extra = [key for key in data if key not in template_keys]
            if missing or extra:
                return 47003, f"argument invalid! data.{(missing or extra)[0]}.value invalid"
        enums = self.library.enums(template_id)
        for key, item in data.items():
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, str):
                return 47003, f"argument invalid! data.{key}.value invalid"
            try:
                # truncate=False: WeChat refuses an over-long value, it never shortens one.
                choices = tuple(enums[key]) if key in enums else None
                keywords.check_value(key, value, truncate=False, choices=choices)
            except keywords.KeywordError:
                return 47003, f"argument invalid! data.{key}.value invalid"
        return 0, "ok"

    def _enter(self, touser: str) -> bool:
        """Mark touser in flight; False if another send to it already is (a 43108)."""
        with self.core.lock:
            if touser in self._inflight:
                return False
            self._inflight.add(touser)
            return True

    def _leave(self, touser: str) -> None:
        with self.core.lock:
            self._inflight.discard(touser)

    def _accept(self, msg: dict[str, Any], at: float) -> int:
        touser: str = msg["touser"]
        template_id: str = msg["template_id"]
        data = msg["data"]
        # Canonical text so that key order does not hide a duplicate.
        fingerprint = json.dumps(data, sort_keys=True, ensure_ascii=False)
        with self.core.lock:
            msgid = self.core.take_msgid_locked()
            r = self.core.records
            r.accepted.append(
                {
                    "touser": touser,
                    "template_id": template_id,
                    "page": msg.get("page"),
                    "data": data,
                    "miniprogram_state": msg.get("miniprogram_state"),
                    "lang": msg.get("lang"),
                    "msgid": str(msgid),
                }
            )
            r.attempts.append(Attempt(touser, template_id, 0, None, at))
            r.by_openid[touser] += 1
            key = (touser, template_id, fingerprint)
            r.seen[key] += 1
            if r.seen[key] > 1:
                r.duplicates += 1
            self.tokens.count_send_locked()
        return msgid

    def _push_sent_event(self, appid: str, msg: dict[str, Any], msgid: int) -> None:
        """After an accepted send: its subscribe_msg_sent_event, if the app has a push set
        up."""
        with self.core.lock:
            pusher = self.pushers.pusher_locked(appid)
            code, status = self._fail_delivery.get(msg["touser"], (0, "success"))
        if pusher is not None:
            pusher.sent(msg["touser"], msg["template_id"], str(msgid), code, status)
