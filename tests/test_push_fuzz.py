"""Property-based tests (hypothesis) of the receiver's parsers, called as WSGI without
Herald's guard, so any exception fails the test: plaintext push bodies (JSON and XML,
push-shaped or not), safe-mode envelopes (random ciphertext, and random plaintext
properly encrypted and signed), and SMS status report batches. For every input: no
exception escapes, the answer is 2xx or 4xx, and a refused request stores nothing (no
push_event row, no push_nonce row)."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.push_bodies import wrap_encrypted, wrap_plain
from tests.conftest import _url_of, make_config
from tests.support import APPID, SECRET
from web import server
from web.push import make_app
from web.wxcrypto import PushCipher, signature

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
TOKEN = "fuzzToken1"
SMS_TOKEN = "fuzz-callback-0123456789"
NOW = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# text that stresses storage: NUL, lone surrogates, long runs, and ordinary characters
hostile = st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d", "]]>", "<", "&", "\\",
                           '"', "\u2028", "中", "😀", "x" * 200, "1988810812324364291"])
texts = st.one_of(st.text(max_size=40),
                  st.lists(st.one_of(hostile, st.text(max_size=5)), max_size=6).map("".join))
scalars = st.one_of(texts, st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                    st.floats(allow_nan=False), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
EVENTS = ["subscribe_msg_popup_event", "subscribe_msg_change_event",
          "subscribe_msg_sent_event", "TEMPLATESENDJOBFINISH", "debug_demo"]
item = st.fixed_dictionaries({}, optional={
    "TemplateId": st.one_of(texts, values), "SubscribeStatusString": st.one_of(
        st.sampled_from(["accept", "reject", "ban"]), texts), "PopupScene": scalars,
    "MsgID": st.one_of(st.integers(min_value=0, max_value=2 ** 64), texts, values),
    "ErrorCode": scalars, "ErrorStatus": scalars})
push_shaped = st.fixed_dictionaries({}, optional={
    "ToUserName": st.one_of(texts, values), "FromUserName": st.one_of(texts, values),
    "CreateTime": st.one_of(st.integers(min_value=-1, max_value=10 ** 20), texts),
    "MsgType": st.one_of(st.just("event"), texts), "Event": st.one_of(st.sampled_from(EVENTS),
                                                                         texts),
    "List": st.one_of(item, st.lists(item, max_size=4), values),
    "MsgID": scalars, "Status": scalars})

ids = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True), texts)
good_item = st.fixed_dictionaries({"TemplateId": ids, "SubscribeStatusString": st.sampled_from(
    ["accept", "reject"])}, optional={"MsgID": st.one_of(ids, st.integers(0, 2 ** 64)),
                                      "ErrorCode": st.sampled_from([0, "0", 3]),
                                      "ErrorStatus": st.one_of(st.just("success"), texts)})
nearly_valid = st.fixed_dictionaries({
    "ToUserName": ids, "FromUserName": ids, "CreateTime": st.integers(0, 2 ** 40),
    "MsgType": st.just("event"), "Event": st.sampled_from(EVENTS),
    "List": st.one_of(good_item, st.lists(good_item, min_size=1, max_size=3))},
    optional={"MsgID": ids, "Status": st.one_of(st.just("success"), texts)})


def json_body(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()  # ASCII escapes: "\ud800" travels as JSON does


def xml_body(fields: dict[str, Any]) -> bytes:
    def element(tag: str, value: Any) -> str:
        tag = "".join(c for c in str(tag) if c.isalnum()) or "x"
        if isinstance(value, dict):
            inner = "".join(element(k, v) for k, v in value.items())
        elif isinstance(value, list):
            return "".join(element(tag, v) for v in value)
        else:
            text = str(value)
            inner = "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
        return f"<{tag}>{inner}</{tag}>"

    return element("xml", fields).encode("utf-8", "surrogatepass")


bodies = st.one_of(nearly_valid.map(json_body), nearly_valid.map(xml_body),
                   push_shaped.map(json_body), push_shaped.map(xml_body),
                   values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300))


class Receiver:
    def __init__(self, db: Any, sandbox: Any, tmp_path: Path) -> None:
        cfg = make_config(_url_of(db, tmp_path), sandbox.url, tmp_path, apps={
            "default": {"appid": APPID, "secret": SECRET,
                        "push": {"token": TOKEN, "aes_key": KEY}},
            "plain": {"appid": "wxplain000000001", "secret": "y" * 8,
                      "push": {"token": TOKEN}}},
            sms={"secret_id": "AKIDtest", "secret_key": "k" * 32,
                 "sdk_app_id": "1400000001", "sign_name": "Herald",
                 "callback_token": SMS_TOKEN}, console={"listen": None})
        self.db = db
        self.app = make_app(server.build(cfg, db), now=lambda: NOW)  # not guarded
        self.nonces = itertools.count()

    def counts(self) -> tuple[int, int]:
        with self.db.connection_context():
            return (self.db.execute_sql("SELECT COUNT(*) FROM push_event").fetchone()[0],
                    self.db.execute_sql("SELECT COUNT(*) FROM push_nonce").fetchone()[0])

    def call(self, path: str, query: dict[str, str] | str, body: bytes) -> int:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path,
                   "QUERY_STRING": query if isinstance(query, str) else urlencode(query),
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                   "REMOTE_ADDR": "127.0.0.1"}
        seen: list[str] = []
        before = self.counts()
        out = b"".join(self.app(environ, lambda status, headers: seen.append(status)))
        code = int(seen[0].split()[0])
        assert 200 <= code < 300 or 400 <= code < 500, (code, out[:200])
        if code >= 400:
            assert self.counts() == before, (code, out[:200])
        self.db.close()  # the next example's count opens its own
        return code


@pytest.fixture
def receiver(db, sandbox, tmp_path: Path) -> Receiver:
    return Receiver(db, sandbox, tmp_path)


def run(test: Callable[..., None]) -> None:
    test()


def test_plaintext_push_bodies(receiver: Receiver) -> None:
    codes: set[int] = set()

    @SETTINGS
    @given(body=bodies, odd_time=st.one_of(st.none(), texts))
    def check(body: bytes, odd_time: str | None) -> None:
        ts = TS if odd_time is None else odd_time
        query, body = wrap_plain_raw(body, ts, str(next(receiver.nonces)))
        codes.add(receiver.call("/wechat/push/plain", query, body))

    run(check)
    assert 200 in codes and 400 in codes  # both stored pushes and refusals were reached


def wrap_plain_raw(body: bytes, ts: Any, nonce: str) -> tuple[dict[str, str], bytes]:
    ts = str(ts).encode("utf-8", "replace").decode()
    return {"signature": signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}, body


def test_safe_mode_envelopes(receiver: Receiver) -> None:
    cipher = PushCipher(KEY, APPID)
    codes: set[int] = set()

    @SETTINGS
    @given(plaintext=bodies, encrypt=st.one_of(st.none(), texts), fmt=st.sampled_from(
        ["json", "xml"]), wrapper_extra=st.one_of(st.none(), push_shaped))
    def check(plaintext: bytes, encrypt: str | None, fmt: str,
              wrapper_extra: dict[str, Any] | None) -> None:
        nonce = str(next(receiver.nonces))
        if encrypt is None:  # a real ciphertext of whatever plaintext, correctly signed
            query, body = wrap_encrypted(cipher, TOKEN, b"{}", fmt, TS, nonce)  # type: ignore[arg-type]
            sealed = cipher.encrypt(plaintext)
        else:  # a ciphertext field that is anything, correctly signed
            query, body = wrap_encrypted(cipher, TOKEN, b"{}", fmt, TS, nonce)  # type: ignore[arg-type]
            sealed = encrypt
        wrapper = dict(wrapper_extra or {}, ToUserName="gh", Encrypt=sealed)
        query["msg_signature"] = signature(TOKEN, str(TS), nonce,
                                           sealed.encode("utf-8", "replace").decode())
        body = json_body(wrapper) if fmt == "json" else xml_body(wrapper)
        codes.add(receiver.call("/wechat/push", query, body))

    run(check)
    assert 200 in codes and 400 in codes


def test_sms_report_batches(receiver: Receiver) -> None:
    report = st.fixed_dictionaries({}, optional={
        "sid": st.one_of(texts, scalars), "report_status": st.one_of(
            st.sampled_from(["SUCCESS", "FAIL"]), scalars),
        "errmsg": scalars, "description": scalars, "user_receive_time": scalars,
        "mobile": scalars, "nationcode": scalars, "extra": values})
    batch = st.one_of(st.lists(report, max_size=6), report, values)
    codes: set[int] = set()

    @SETTINGS
    @given(data=batch, raw=st.one_of(st.none(), st.binary(max_size=200)))
    def check(data: Any, raw: bytes | None) -> None:
        body = raw if raw is not None else json.dumps(data).encode()
        codes.add(receiver.call(f"/tencent/sms/status/{SMS_TOKEN}", "", body))

    run(check)
    assert 200 in codes and 400 in codes


def test_a_stored_batch_is_whole(receiver: Receiver) -> None:
    """An SMS batch whose last report holds a lone surrogate stores none of the others
    (it used to store them one by one, then fail with a 500)."""
    batch = [{"sid": f"s{i}", "report_status": "SUCCESS"} for i in range(5)]
    batch.append({"sid": "s5", "report_status": "SUCCESS", "errmsg": "\ud800"})
    assert receiver.call(f"/tencent/sms/status/{SMS_TOKEN}", "",
                         json.dumps(batch).encode()) == 400
    assert receiver.counts() == (0, 0)
    assert receiver.call(f"/tencent/sms/status/{SMS_TOKEN}", "",
                         json.dumps(batch[:5]).encode()) == 200
    assert receiver.counts() == (5, 0)


def test_the_plaintext_helper_agrees_with_the_builder() -> None:
    q1, _ = wrap_plain(TOKEN, b"{}", TS, "7")
    q2, _ = wrap_plain_raw(b"{}", TS, "7")
    assert (q1["signature"], q1["timestamp"]) == (q2["signature"], q2["timestamp"])
