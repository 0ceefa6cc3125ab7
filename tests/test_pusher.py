"""The WeChat sandbox pushes like WeChat: every push checked by a receiver written here,
which verifies signatures and decrypts with web.wxcrypto and reads the message with
web.push_events.parse_message, as Herald's receiver will."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from channels.wechat_api import WeChatClient
from jobs import dispatch
from sandbox.pusher import Pusher
from tests.channel_support import OA_APPID, OA_SECRET, OA_TID, token, with_official_account
from tests.conftest import APPID, insert_sql, row
from web.push_events import CHANGE, POPUP, SENT, TEMPLATE_JOB, PushMessage, outer, parse_message
from web.wxcrypto import PushCipher, check_signature

PUSH_TOKEN = "PushToken123"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters
ORDER = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"
BODY = {"touser": "oUser1", "template_id": ORDER, "page": "pages/order/detail",
        "data": {"thing2": {"value": "Tea"}, "amount3": {"value": "3元"},
                 "thing11": {"value": "shipped"}, "thing5": {"value": "ok"}},
        "miniprogram_state": "formal", "lang": "zh_CN"}


@pytest.fixture
def db(any_db):
    """Rows go through every dialect (servers skip unless configured)."""
    return any_db


class Receiver:
    """A push endpoint that trusts nothing: signature (and msg_signature, decryption and
    the appid inside in safe mode) checked before a message is kept."""

    def __init__(self, appid: str = APPID, answers: list[tuple[int, bytes]] | None = None
                 ) -> None:
        self.cipher = PushCipher(AES_KEY, appid)
        self.answers = list(answers or [])
        self.got: list[tuple[dict[str, str], bytes, PushMessage]] = []
        self.refused: list[str] = []
        self._cv = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                status, reply = receiver.take(query, body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wechat/push"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def read(self, query: dict[str, str], body: bytes) -> PushMessage | str:
        ts, nonce = query.get("timestamp"), query.get("nonce")
        if not check_signature(query.get("signature"), PUSH_TOKEN, ts, nonce):
            return "bad signature"
        if query.get("encrypt_type") != "aes":
            return parse_message(body)
        encrypted = outer(body).get("Encrypt")
        if not isinstance(encrypted, str):
            return "no Encrypt"
        if not check_signature(query.get("msg_signature"), PUSH_TOKEN, ts, nonce, encrypted):
            return "bad msg_signature"
        return parse_message(self.cipher.decrypt(encrypted))

    def take(self, query: dict[str, str], body: bytes) -> tuple[int, bytes]:
        found = self.read(query, body)
        with self._cv:
            if isinstance(found, str):
                self.refused.append(found)
                answer = (401, b"refused")
            else:
                self.got.append((query, body, found))
                answer = self.answers.pop(0) if self.answers else (200, b"success")
            self._cv.notify_all()
        return answer

    def wait(self, count: int, timeout: float = 10.0) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: len(self.got) >= count, timeout)

    @property
    def messages(self) -> list[PushMessage]:
        with self._cv:
            return [m for _, _, m in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def subscribe_send(sb, body: dict[str, Any] = BODY) -> str:
    client = WeChatClient(sb.url, timeout=5)
    try:
        answer = client.send(token(sb), body)
    finally:
        client.close()
    assert answer.msgid, answer.reason
    return answer.msgid


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("mode", ["plain", "compatible", "safe"])
def test_an_accepted_send_pushes_its_sent_event(sandbox, receiver, fmt, mode):
    pusher = sandbox.push_to(APPID, receiver.url, token=PUSH_TOKEN, aes_key=AES_KEY, fmt=fmt,
                             mode=mode)
    msgid = subscribe_send(sandbox)
    assert receiver.wait(1) and pusher.wait_finished(1)
    [(query, body, msg)] = receiver.got
    assert (msg.event, msg.from_user, msg.msg_type) == (SENT, "oUser1", "event")
    [item] = msg.items
    assert (item.template_id, item.msgid, item.error_code, item.error_status) == (
        ORDER, msgid, 0, "success")
    fields = outer(body)
    if mode == "safe":
        assert set(fields) == {"ToUserName", "Encrypt"}  # nothing readable without the key
    elif mode == "compatible":
        assert "Encrypt" in fields and fields["Event"] == SENT
    else:
        assert "Encrypt" not in fields and "encrypt_type" not in query
    assert body.lstrip()[:1] == (b"<" if fmt == "xml" else b"{")
    [record] = pusher.records
    assert record.delivered and [(a.status, a.body) for a in record.answers] == [
        (200, "success")]


def test_a_failed_delivery_reports_its_error(sandbox, receiver):
    sandbox.push_to(APPID, receiver.url, token=PUSH_TOKEN, fmt="json")
    sandbox.fail_delivery("oUser1", 20001, "fail: user blocked")
    subscribe_send(sandbox)
    assert receiver.wait(1)
    [item] = receiver.messages[0].items
    assert (item.error_code, item.error_status) == (20001, "fail: user blocked")


def test_a_row_delivered_by_dispatch_gets_a_push_with_its_msgid(db, sandbox, receiver,
                                                               runtime_factory):
    sandbox.push_to(APPID, receiver.url, token=PUSH_TOKEN, aes_key=AES_KEY, mode="safe")
    rt = runtime_factory(db, sandbox)
    rid = insert_sql(db, template="order_status", openid="oUser9",
                     params='["Tea", 3, "shipped", "ok"]')
    dispatch.run(rt)
    assert receiver.wait(1)
    assert receiver.messages[0].items[0].msgid == row(rid).msgid


def test_template_send_pushes_templatesendjobfinish(sandbox):
    with_official_account(sandbox)
    oa = Receiver(appid=OA_APPID)
    try:
        sandbox.push_to(OA_APPID, oa.url, token=PUSH_TOKEN, aes_key=AES_KEY, mode="safe",
                        to_user="gh_officialacct")
        sandbox.block("oBlocker")
        client = WeChatClient(sandbox.url, timeout=5)
        tok = token(sandbox, OA_APPID, OA_SECRET)
        sent = {}
        for openid in ("oFan", "oBlocker"):
            answer = client.call("POST", "/cgi-bin/message/template/send",
                                 params={"access_token": tok},
                                 json={"touser": openid, "template_id": OA_TID,
                                       "data": {"thing2": {"value": "a"},
                                                "thing11": {"value": "b"}}})
            sent[openid] = answer.msgid
        client.close()
        assert oa.wait(2)
        got = {m.from_user: m for m in oa.messages}
        for openid, status in (("oFan", "success"), ("oBlocker", "failed:user block")):
            msg = got[openid]
            assert (msg.event, msg.to_user) == (TEMPLATE_JOB, "gh_officialacct")
            assert (msg.items[0].msgid, msg.items[0].error_status) == (sent[openid], status)
    finally:
        oa.close()


def test_popup_and_change_events_on_request(sandbox, receiver):
    sandbox.push_to(APPID, receiver.url, token=PUSH_TOKEN, fmt="json", mode="compatible",
                    aes_key=AES_KEY)
    sandbox.popup(APPID, "oUser1", {ORDER: "accept", "other-template": "reject"})
    control = json.dumps({"appid": APPID, "openid": "oUser2",
                          "results": {ORDER: "reject"}}).encode()
    req = urllib.request.Request(f"{sandbox.url}/_sandbox/change", data=control,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    assert receiver.wait(2) and sandbox.pusher(APPID).wait_finished(2)
    popup, change = sorted(receiver.messages, key=lambda m: m.from_user)
    assert popup.event == POPUP and {(i.template_id, i.status) for i in popup.items} == {
        (ORDER, "accept"), ("other-template", "reject")}
    assert popup.items[0].popup_scene == "0"
    assert change.event == CHANGE and [(i.template_id, i.status) for i in change.items] == [
        (ORDER, "reject")]
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/pushes", timeout=5) as resp:
        pushes = json.loads(resp.read())
    assert sorted(p["event"] for p in pushes) == [CHANGE, POPUP]
    assert all(p["delivered"] for p in pushes)


def test_a_push_is_retried_until_the_receiver_says_success(sandbox):
    r = Receiver(answers=[(500, b"oops"), (200, b"not now")])
    try:
        pusher = sandbox.push_to(APPID, r.url, token=PUSH_TOKEN, aes_key=AES_KEY, mode="safe",
                                 backoff=0.01)
        subscribe_send(sandbox)
        assert pusher.wait_finished(1)
        [record] = pusher.records
        assert record.delivered and [(a.status, a.body) for a in record.answers] == [
            (500, "oops"), (200, "not now"), (200, "success")]
        assert len(r.got) == 3
        # the same message each time (CreateTime kept), signed and encrypted afresh
        assert len({m.create_time for m in r.messages}) == 1
        assert len({q["nonce"] + q["timestamp"] + b.decode() for q, b, _ in r.got}) == 3
    finally:
        r.close()


def test_an_empty_answer_acknowledges(sandbox):
    r = Receiver(answers=[(200, b"")])
    try:
        pusher = sandbox.push_to(APPID, r.url, token=PUSH_TOKEN)
        subscribe_send(sandbox)
        assert pusher.wait_finished(1) and pusher.records[0].delivered
        assert len(pusher.records[0].answers) == 1
    finally:
        r.close()


def test_a_receiver_that_never_acknowledges_gets_three_retries(sandbox):
    r = Receiver(answers=[(503, b"busy")] * 10)
    try:
        pusher = sandbox.push_to(APPID, r.url, token=PUSH_TOKEN, backoff=0.01)
        subscribe_send(sandbox)
        assert pusher.wait_finished(1)
        [record] = pusher.records
        assert record.gave_up and not record.delivered
        assert [a.status for a in record.answers] == [503] * 4
    finally:
        r.close()


def test_an_unreachable_receiver_is_recorded(sandbox):
    pusher = sandbox.push_to(APPID, "http://127.0.0.1:9/push", token=PUSH_TOKEN, backoff=0.01)
    subscribe_send(sandbox)
    assert pusher.wait_finished(1)
    [record] = pusher.records
    assert record.gave_up and all(a.status is None and a.error for a in record.answers)


def test_a_receiver_with_the_wrong_token_refuses_every_push(sandbox, receiver):
    pusher = sandbox.push_to(APPID, receiver.url, token="AnotherToken", aes_key=AES_KEY,
                             mode="safe", backoff=0.01)
    subscribe_send(sandbox)
    assert pusher.wait_finished(1)
    assert receiver.got == [] and receiver.refused == ["bad signature"] * 4


def test_pusher_options_are_checked():
    with pytest.raises(ValueError, match="format"):
        Pusher("http://x", token="t", appid=APPID, fmt="yaml")
    with pytest.raises(ValueError, match="mode"):
        Pusher("http://x", token="t", appid=APPID, mode="secret")
    with pytest.raises(ValueError, match="needs the EncodingAESKey"):
        Pusher("http://x", token="t", appid=APPID, mode="safe")
    assert PUSH_TOKEN not in repr(Pusher("http://x", token=PUSH_TOKEN, appid=APPID))
