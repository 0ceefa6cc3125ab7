"""The push receiver over real HTTP (waitress on loopback) and the events it stores,
applied to rows and the grant ledger. WeChat's own worked examples come first."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

import clock
from db.models import MsgEvent, MsgList, PushEvent, SubscribeGrant
from jobs import dispatch, events
from sandbox.push_bodies import build_message, wrap_encrypted, wrap_plain
from tests.conftest import insert_sql, make_config
from tests.support import APPID, SECRET
from web import server
from web.push import make_app
from web.push_events import PushItem, PushMessage
from web.wxcrypto import PushCipher, signature

DOC_TOKEN, DOC_KEY, DOC_APPID = "AAAAA", "A" * 43, "wxba5fad812f8e6fb9"
DOC_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPx"
    "LKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMu"
    "FUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDr"
    "M1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"  # not all zeros: leaks would show
TOKEN = "pushTokenX9"
SMS_TOKEN = "cb-token-0123456789abcdef"
MARKER = "MARKER-payload-7Qz"
ORDER_TID = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"  # templates.yaml's order_status
DOC_TS = 1714112445  # the docs' safe-mode example: the receiver's clock reads this time


@pytest.fixture
def receiver(any_db, sandbox, tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = _url(any_db, tmp_path)
    cfg = make_config(url, sandbox.url, tmp_path, apps={
        "default": {"appid": APPID, "secret": SECRET, "push": {"token": TOKEN, "aes_key": KEY}},
        "doc": {"appid": DOC_APPID, "secret": "x" * 8,
                "push": {"token": DOC_TOKEN, "aes_key": DOC_KEY}},
        "plain": {"appid": "wxplain000000001", "secret": "y" * 8, "push": {"token": TOKEN}},
    }, sms={"secret_id": "AKIDtest", "secret_key": "k" * 32, "sdk_app_id": "1400000001",
            "sign_name": "Herald", "callback_token": SMS_TOKEN},
        console={"listen": None}, grants={"on_missing": "hold"})
    ctx = server.build(cfg, any_db)
    woken: list[int] = []
    ctx.wake = lambda: woken.append(1)
    r: dict[str, Any] = {"now": datetime.fromtimestamp(DOC_TS, UTC)}
    listener = server.Listener(make_app(ctx, now=lambda: r["now"]), "127.0.0.1", 0,
                               name="push").start()
    r.update(url=listener.url, ctx=ctx, db=any_db, woken=woken, cfg=cfg)
    try:
        yield r
    finally:
        listener.stop()


def _url(db: Any, tmp_path: Path) -> str:
    from tests.conftest import _url_of

    return _url_of(db, tmp_path)


def stored(db: Any) -> list[PushEvent]:
    with db.connection_context():
        return list(PushEvent.select().order_by(PushEvent.id))


def apply(r: dict[str, Any], later: timedelta = timedelta(0)) -> events.Applied:
    """Apply events at the receiver's clock (plus `later`)."""
    with r["db"].connection_context():
        return events.apply_pending(r["db"], now=r["now"] + later,
                                    templates=r["ctx"].templates)


def safe_push(msg: PushMessage, fmt: str = "json", *, key: str = KEY, appid: str = APPID,
              token: str = TOKEN, **kw: Any) -> tuple[dict[str, str], bytes]:
    body = build_message(msg, fmt)  # type: ignore[arg-type]
    return wrap_encrypted(PushCipher(key, appid), token, body, fmt, DOC_TS,  # type: ignore[arg-type]
                          "415670741", **kw)


def popup(openid: str, *statuses: tuple[str, str], at: int = 1700000000) -> PushMessage:
    return PushMessage(to_user="gh_x", from_user=openid, create_time=at, msg_type="event",
                       event="subscribe_msg_popup_event",
                       items=tuple(PushItem.grant(t, s, "0") for t, s in statuses))


def sent(openid: str, msgid: str, code: int = 0, status: str = "success") -> PushMessage:
    return PushMessage(to_user="gh_x", from_user=openid, create_time=1700000100,
                       msg_type="event", event="subscribe_msg_sent_event",
                       items=(PushItem.receipt(ORDER_TID, msgid, code, status),))


# -- WeChat's worked examples ------------------------------------------------------------
def test_the_docs_handshake_example(receiver) -> None:
    q = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "timestamp": "1714036504",
         "nonce": "1514711492", "echostr": "4375120948345356249"}
    ok = requests.get(f"{receiver['url']}/wechat/push/doc", params=q, timeout=5)
    assert (ok.status_code, ok.text) == (200, "4375120948345356249")
    bad = requests.get(f"{receiver['url']}/wechat/push/doc",
                       params={**q, "signature": "0" * 40}, timeout=5)
    assert bad.status_code == 403 and bad.text != q["echostr"]


def test_the_docs_safe_mode_push_is_decrypted_and_stored(receiver) -> None:
    query = {"signature": "6c5c811b55cc85e0e1b54100749188c20beb3f5d",
             "timestamp": "1714112445", "nonce": "415670741",
             "openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "encrypt_type": "aes",
             "msg_signature": "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"}
    body = json.dumps({"ToUserName": "gh_97417a04a28d", "Encrypt": DOC_ENCRYPT})
    r = requests.post(f"{receiver['url']}/wechat/push/doc", params=query, data=body, timeout=5)
    assert (r.status_code, r.text) == (200, "success")
    [event] = stored(receiver["db"])
    assert (event.app, event.source, event.kind, event.openid) == (
        "doc", "wechat", "debug_demo", "o9AgO5Kd5ggOC-bXrbNODIiE3bGY")
    assert receiver["woken"]  # the applier was told at once
    done = apply(receiver)
    assert done.other == 1 and stored(receiver["db"])[0].applied_at is not None


# -- grants and receipts from safe-mode pushes -------------------------------------------
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_popup_accepts_in_one_and_several_items_add_grants(receiver, fmt: str) -> None:
    for msg in (popup("oA", ("T1", "accept")),
                popup("oA", ("T1", "accept"), ("T2", "reject"), ("T3", "accept"), at=1700000001)):
        query, body = safe_push(msg, fmt)
        r = requests.post(f"{receiver['url']}/wechat/push", params=query, data=body, timeout=5)
        assert (r.status_code, r.text) == (200, "success")
    apply(receiver)
    with receiver["db"].connection_context():
        ledger = {g.template_id: (g.balance, g.status) for g in SubscribeGrant.select()
                  .where(SubscribeGrant.openid == "oA")}
    assert ledger == {"T1": (2, "accept"), "T2": (None, "reject"), "T3": (1, "accept")}


def test_a_duplicate_push_is_stored_and_applied_once(receiver) -> None:
    query, body = safe_push(popup("oDup", ("T1", "accept")))
    for _ in range(3):  # WeChat retries a push it thinks went unanswered
        r = requests.post(f"{receiver['url']}/wechat/push", params=query, data=body, timeout=5)
        assert r.text == "success"
    assert len(stored(receiver["db"])) == 1
    apply(receiver)
    apply(receiver)
    with receiver["db"].connection_context():
        assert SubscribeGrant.get(SubscribeGrant.openid == "oDup").balance == 1


def test_receipts_land_on_the_row_even_before_its_msgid_is_written(receiver) -> None:
    db = receiver["db"]
    rid = insert_sql(db, template="order_status", openid="oR", params='["a", 1, "b", "c"]')
    early = safe_push(sent("oR", "1988810812324364999"))
    r = requests.post(f"{receiver['url']}/wechat/push", params=early[0], data=early[1],
                      timeout=5)
    assert r.text == "success"
    assert apply(receiver).pending == 1  # no row has that msgid yet: kept for later
    with db.connection_context():
        MsgList.update(status="success", msgid="1988810812324364999").where(
            MsgList.id == rid).execute()
    assert apply(receiver).examined == 0  # looked at again by time, not on every run
    assert apply(receiver, timedelta(seconds=6)).receipts == 1
    failed = safe_push(sent("oR2", "77", 3, "fail: system failed"))
    rid2 = insert_sql(db, template="order_status", openid="oR2", params='["a", 1, "b", "c"]')
    with db.connection_context():
        MsgList.update(status="success", msgid="77").where(MsgList.id == rid2).execute()
    requests.post(f"{receiver['url']}/wechat/push", params=failed[0], data=failed[1], timeout=5)
    apply(receiver)
    with db.connection_context():
        one, two = MsgList.get_by_id(rid), MsgList.get_by_id(rid2)
        timeline = [e.kind for e in MsgEvent.select().where(MsgEvent.msg_id == rid)]
    assert (one.receipt, one.receipt_error) == ("delivered", None)
    assert one.receipt_at is not None and "receipt" in timeline
    assert two.receipt == "failed" and "ErrorCode 3: fail: system failed" in two.receipt_error


def test_hold_releases_a_row_when_the_user_accepts_again(receiver, sandbox, runtime_factory
                                                         ) -> None:
    db = receiver["db"]
    rt = runtime_factory(db, sandbox, grants={"on_missing": "hold"})
    with db.connection_context():
        SubscribeGrant.insert(app="default", openid="oHold", template_id=ORDER_TID, balance=0,
                              updated_at=clock.now()).execute()
    rid = insert_sql(db, template="order_status", openid="oHold", params='["a", 1, "b", "c"]')
    with db.connection_context():
        dispatch.run(rt)
        held = MsgList.get_by_id(rid)
    assert (held.status, held.attempts) == ("wait", 0)
    assert held.error.startswith("held: no grant") and sandbox.accepted_count("oHold") == 0
    query, body = safe_push(popup("oHold", (ORDER_TID, "accept")))
    requests.post(f"{receiver['url']}/wechat/push", params=query, data=body, timeout=5)
    assert apply(receiver).released == 1
    with db.connection_context():
        dispatch.run(rt)
        done = MsgList.get_by_id(rid)
        balance = SubscribeGrant.get(SubscribeGrant.openid == "oHold").balance
    assert done.status == "success" and sandbox.accepted_count("oHold") == 1
    assert balance == 0  # the accept gave one, the send used it


def test_an_application_reported_grant_is_applied(receiver) -> None:
    db = receiver["db"]
    with db.connection_context():
        db.execute_sql(
            f"INSERT INTO push_event (app, source, kind, openid, payload) VALUES "
            f"({db.param}, 'app', 'grant', {db.param}, {db.param})",
            ("default", "oApp", json.dumps({ORDER_TID: "accept", "T9": "reject",
                                            "errMsg": "requestSubscribeMessage:ok"})))
        db.execute_sql(
            f"INSERT INTO push_event (app, source, kind, openid, payload) VALUES "
            f"({db.param}, 'app', 'grant', {db.param}, {db.param})",
            ("default", "oApp", '{"template_id": 5, "result": "maybe"}'))
    done = apply(receiver)
    assert (done.grants, done.failed) == (2, 1)
    with db.connection_context():
        ledger = {g.template_id: (g.balance, g.status) for g in SubscribeGrant.select()}
        bad = PushEvent.select().order_by(PushEvent.id.desc()).first()
    assert ledger == {ORDER_TID: (1, "accept"), "T9": (None, "reject")}
    assert "template_id is missing" in bad.error and bad.applied_at is not None


# -- SMS status callbacks ----------------------------------------------------------------
def test_sms_status_reports_become_receipts(receiver) -> None:
    db = receiver["db"]
    rid = insert_sql(db, template="order_status", openid="", params="[]", status="success",
                     phone="+8613800138000")
    with db.connection_context():
        MsgList.update(msgid="2640:4307330717223468130").where(MsgList.id == rid).execute()
    reports = [{"user_receive_time": "2026-12-01 18:03:04", "nationcode": "86",
                "mobile": "13800138000", "report_status": "FAIL", "errmsg": "UNDELIV",
                "description": "用户不在服务区", "sid": "2640:4307330717223468130"}]
    wrong = requests.post(f"{receiver['url']}/tencent/sms/status/not-the-token", json=reports,
                          timeout=5)
    assert wrong.status_code == 404 and not stored(db)
    r = requests.post(f"{receiver['url']}/tencent/sms/status/{SMS_TOKEN}", json=reports,
                      timeout=5)
    assert r.json() == {"result": 0, "errmsg": "OK"}
    assert apply(receiver).receipts == 1
    with db.connection_context():
        row = MsgList.get_by_id(rid)
    assert row.receipt == "failed" and "UNDELIV" in row.receipt_error
    assert row.receipt_at.isoformat().startswith("2026-12-01T10:03:04")  # Beijing -> UTC


# -- hostile pushes: 4xx, one log line without the payload, nothing stored ---------------
def plain_query(timestamp: str = str(DOC_TS), nonce: str = "42") -> dict[str, str]:
    return {"signature": signature(TOKEN, timestamp, nonce), "timestamp": timestamp,
            "nonce": nonce}


def _hostile_cases() -> list[tuple[str, str, Any]]:
    good_q, good_b = safe_push(popup(MARKER, ("T1", "accept")))
    foreign_q, foreign_b = safe_push(popup(MARKER, ("T1", "accept")), appid="wxother000000009")
    plain_q, plain_b = wrap_plain(TOKEN, build_message(popup(MARKER, ("T1", "accept")), "json"),
                                  DOC_TS, "42")
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "' + MARKER.encode() * 10 +
            b'"><!ENTITY b "&a;&a;&a;&a;">]><xml><ToUserName>&b;</ToUserName></xml>')
    cases: list[tuple[str, str, Any]] = [
        ("bad msg_signature", "/wechat/push", ({**good_q, "msg_signature": "0" * 40}, good_b)),
        ("foreign appid", "/wechat/push", (foreign_q, foreign_b)),
        ("oversized", "/wechat/push", (good_q, b"{" + b" " * (64 * 1024) + b"}")),
        ("malformed XML", "/wechat/push/plain",
         (plain_query(), b"<xml><a>" + MARKER.encode())),
        ("XML bomb", "/wechat/push/plain", (plain_query(), bomb)),
        ("plaintext to a safe-mode app", "/wechat/push", (plain_q, plain_b)),
        ("bad plaintext signature", "/wechat/push/plain",
         ({**plain_q, "signature": "1" * 40}, plain_b)),
        ("unknown app", "/wechat/push/nosuchapp", (good_q, good_b)),
        ("no Encrypt", "/wechat/push",
         (good_q, json.dumps({"ToUserName": "gh", "Data": MARKER}).encode())),
        ("not base64", "/wechat/push",
         ({**good_q, "msg_signature": signature(TOKEN, good_q["timestamp"], good_q["nonce"],
                                                "!!" + MARKER)},
          json.dumps({"ToUserName": "gh", "Encrypt": "!!" + MARKER}).encode())),
        ("not XML or JSON", "/wechat/push/plain", (plain_query(), MARKER.encode())),
    ]
    return cases


@pytest.mark.parametrize("case", [c[0] for c in _hostile_cases()])
def test_hostile_pushes_are_refused_and_store_nothing(receiver, caplog, case: str) -> None:
    _, path, (query, body) = next(c for c in _hostile_cases() if c[0] == case)
    with caplog.at_level(logging.WARNING, logger="herald.push"):
        r = requests.post(f"{receiver['url']}{path}", params=query, data=body, timeout=10)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert MARKER not in r.text
    assert stored(receiver["db"]) == []
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "herald.push"]
    assert len(lines) == 1 and "push refused" in lines[0]
    assert MARKER not in lines[0] and KEY not in lines[0] and TOKEN not in lines[0]


def test_status_and_metrics_show_receipts_grants_and_pushes(receiver) -> None:
    from commands.status import gather, lines
    from metrics import QueueCollector

    db = receiver["db"]
    now = clock.now()
    sent_ok = insert_sql(db, template="order_status", openid="oS1", params="[]")
    sent_lost = insert_sql(db, template="order_status", openid="oS2", params="[]")
    with db.connection_context():
        MsgList.update(status="success", msgid="501", sent_at=now).where(
            MsgList.id == sent_ok).execute()
        MsgList.update(status="success", msgid="502",
                       sent_at=now - timedelta(hours=2)).where(
            MsgList.id == sent_lost).execute()
    q, b = safe_push(sent("oS1", "501"))
    requests.post(f"{receiver['url']}/wechat/push", params=q, data=b, timeout=5)
    apply(receiver)
    bad_q, bad_b = safe_push(sent("oS1", "503"))
    requests.post(f"{receiver['url']}/wechat/push",
                  params={**bad_q, "msg_signature": "0" * 40}, data=bad_b, timeout=5)
    with db.connection_context():
        from db import heartbeat

        heartbeat.beat(db, daemon_id="web-1", role="serve", started_at=now, now=now,
                       info={"pushes": receiver["ctx"].push_receiver.snapshot()})
        report = gather(db, receiver["cfg"], now)
        text = "\n".join(lines(report, now))
        families = {f.name: f for f in QueueCollector(db, missing_after=1800).collect()}
    assert report["receipts"]["delivered"] == 1 and report["receipts"]["missing"] == 1
    assert report["pushes"]["received"] == {"stored": 1, "refused:bad msg_signature": 1}
    assert "1 delivered, 0 failed, 1 none after 30 min" in text
    assert "refused: 1 bad msg_signature" in text
    receipts = {s.labels["state"]: s.value for s in families["herald_receipts"].samples}
    assert receipts == {"delivered": 1, "failed": 0, "missing": 0, "awaiting": 0}  # last hour
    pushed = {s.labels["result"]: s.value for s in families["herald_push_events"].samples}
    assert pushed == {"stored": 1, "refused:bad msg_signature": 1}
