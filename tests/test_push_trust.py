"""Trust at the seams, the push side (issue 17): replays and forgeries refused, receipts
only for their own app's and user's row, values no engine stores refused or closed, and
an inbox whose waiting receipts never hold up what comes after them. Each on SQLite,
PostgreSQL and MariaDB (the receiver's state lives in the database)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from db.dialects import dialect
from db.models import MsgList, PushEvent, PushNonce, SubscribeGrant
from jobs import events
from sandbox.push_bodies import build_message, wrap_encrypted, wrap_plain
from tests.conftest import _url_of, insert_sql, make_config
from tests.support import APPID, SECRET
from web import server
from web.push import make_app
from web.push_events import TEMPLATE_JOB, PushItem, PushMessage
from web.wxcrypto import PushCipher, signature

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
TOKEN = "pushTokenX9"
SMS_TOKEN = "cb-token-0123456789abcdef"
OA_APPID = "wxoaaccount00001"
NOW = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
ORDER_TID = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"
OA_TEMPLATES = """
oa_notice:
  channel: oa_template
  app: oa
  template_id: OA_TPL_1
  params: [goods_name, goods_price, order_status, remark]
  data: {thing2: "{{ goods_name }}"}
"""


def receiver_config(db: Any, sandbox: Any, tmp_path: Path, **extra: Any) -> Any:
    (tmp_path / "more.yaml").write_text((Path(__file__).parent.parent / "templates.yaml")
                                        .read_text() + OA_TEMPLATES)
    return make_config(_url_of(db, tmp_path), sandbox.url, tmp_path, apps={
        "default": {"appid": APPID, "secret": SECRET, "push": {"token": TOKEN, "aes_key": KEY}},
        "plain": {"appid": "wxplain000000001", "secret": "y" * 8, "push": {"token": TOKEN}},
        "other": {"appid": "wxother000000002", "secret": "z" * 8,
                  "push": {"token": TOKEN, "aes_key": KEY}},
        "oa": {"appid": OA_APPID, "secret": "o" * 8, "kind": "official_account",
               "push": {"token": TOKEN, "aes_key": KEY}},
    }, sms={"secret_id": "AKIDtest", "secret_key": "k" * 32, "sdk_app_id": "1400000001",
            "sign_name": "Herald", "callback_token": SMS_TOKEN},
        console={"listen": None}, templates=str(tmp_path / "more.yaml"), **extra)


class Web:
    """One receiver (a `serve`'s push listener) with its own clock."""

    def __init__(self, cfg: Any, db: Any) -> None:
        self.now = NOW
        self.ctx = server.build(cfg, db)
        self.listener = server.Listener(make_app(self.ctx, now=lambda: self.now),
                                        "127.0.0.1", 0, name="push").start()
        self.url = self.listener.url
        self.db = db

    def post(self, path: str, query: dict[str, str], body: bytes) -> requests.Response:
        return requests.post(f"{self.url}{path}", params=query, data=body, timeout=10)

    def refused(self) -> dict[str, int]:
        return {k: v for k, v in self.ctx.push_receiver.snapshot().items()
                if k.startswith("refused:")}

    def apply(self, later: timedelta = timedelta(0), **kw: Any) -> events.Applied:
        with self.db.connection_context():
            return events.apply_pending(self.db, now=self.now + later,
                                        templates=self.ctx.templates, **kw)


@pytest.fixture
def web(any_db, sandbox, tmp_path: Path) -> Iterator[Web]:
    w = Web(receiver_config(any_db, sandbox, tmp_path), any_db)
    try:
        yield w
    finally:
        w.listener.stop()


def stored(db: Any) -> list[PushEvent]:
    with db.connection_context():
        return list(PushEvent.select().order_by(PushEvent.id))


def popup(openid: str, tid: str = "T1", status: str = "accept", at: int = TS) -> PushMessage:
    return PushMessage(to_user="gh_x", from_user=openid, create_time=at, msg_type="event",
                       event="subscribe_msg_popup_event",
                       items=(PushItem.grant(tid, status, "0"),))


def sent(openid: str, msgid: str, code: int = 0, status: str = "success") -> PushMessage:
    return PushMessage(to_user="gh_x", from_user=openid, create_time=TS, msg_type="event",
                       event="subscribe_msg_sent_event",
                       items=(PushItem.receipt(ORDER_TID, msgid, code, status),))


def safe(msg: PushMessage | bytes, ts: int = TS, nonce: str = "415670741",
         appid: str = APPID) -> tuple[dict[str, str], bytes]:
    body = msg if isinstance(msg, bytes) else build_message(msg, "json")
    return wrap_encrypted(PushCipher(KEY, appid), TOKEN, body, "json", ts, nonce)


def plain(msg: PushMessage | bytes, ts: int = TS, nonce: str = "42"
          ) -> tuple[dict[str, str], bytes]:
    body = msg if isinstance(msg, bytes) else build_message(msg, "json")
    return wrap_plain(TOKEN, body, ts, nonce)


# ----------------------------------------------------------------- replays and forgeries


def test_a_push_outside_the_window_is_refused_either_way(web: Web) -> None:
    max_age = 300
    cases = {
        "plaintext, old": ("/wechat/push/plain", plain(popup("oOld"), TS - max_age - 1)),
        "plaintext, ahead": ("/wechat/push/plain", plain(popup("oAhead"), TS + max_age + 1)),
        "safe, old": ("/wechat/push", safe(popup("oOld2"), TS - 86400 * 365)),
        "safe, ahead": ("/wechat/push", safe(popup("oAhead2"), TS + max_age + 1)),
        "not a number": ("/wechat/push/plain", plain(popup("oNaN"), "17e8")),  # type: ignore[arg-type]
        "other digits": ("/wechat/push/plain", plain(popup("oNaN2"), "١٧٦٤٥٧٦٠٠٠")),  # type: ignore[arg-type]
    }
    for name, (path, (query, body)) in cases.items():
        r = web.post(path, query, body)
        assert (r.status_code, r.text) == (403, "stale\n"), name
    assert stored(web.db) == []
    assert web.refused() == {"refused:stale": 6}
    # at the edges of the window, both ways, it is taken
    for path, (query, body) in (("/wechat/push/plain", plain(popup("oEdge1"), TS - max_age)),
                                ("/wechat/push", safe(popup("oEdge2"), TS + max_age))):
        r = web.post(path, query, body)
        assert (r.status_code, r.text) == (200, "success")
    assert len(stored(web.db)) == 2


def test_the_handshake_still_echoes_an_old_timestamp(web: Web) -> None:
    q = {"signature": signature(TOKEN, "1000", "7"), "timestamp": "1000", "nonce": "7",
         "echostr": "e42"}
    r = requests.get(f"{web.url}/wechat/push/plain", params=q, timeout=5)
    assert (r.status_code, r.text) == (200, "e42")


def test_a_replayed_plaintext_signature_with_another_body_is_a_forgery(web: Web) -> None:
    query, genuine = plain(popup("oGood", "T1", "accept"))
    assert web.post("/wechat/push/plain", query, genuine).text == "success"
    # the attacker keeps the query string and swaps the body, three times
    forged = [build_message(popup("oGood", "T1", "reject"), "json"),
              build_message(popup("oVictim", "T9", "accept"), "json"),
              build_message(sent("oGood", "1988810812324364291", 3, "failed:forged"), "xml")]
    for body in forged:
        r = web.post("/wechat/push/plain", query, body)
        assert (r.status_code, r.text) == (403, "forged\n")
    # WeChat's retry of the genuine push: answered success, stored once
    again = web.post("/wechat/push/plain", query, genuine)
    assert (again.status_code, again.text) == (200, "success")
    assert len(stored(web.db)) == 1
    assert web.ctx.push_receiver.snapshot() == {"stored": 1, "duplicate": 1,
                                                "refused:forged": 3}
    web.apply()
    with web.db.connection_context():
        ledger = [(g.openid, g.template_id, g.balance, g.status)
                  for g in SubscribeGrant.select()]
    assert ledger == [("oGood", "T1", 1, "accept")]


def test_forgeries_are_refused_across_several_receivers_on_one_database(
        any_db, sandbox, tmp_path: Path) -> None:
    """Two receivers (two `serve`s) on one database: what one saw, the other knows; and
    sixteen bodies racing for one timestamp and nonce store exactly one."""
    cfg = receiver_config(any_db, sandbox, tmp_path)
    one, two = Web(cfg, any_db), Web(cfg, any_db)
    try:
        query, genuine = plain(popup("oTwo", "T1"))
        assert one.post("/wechat/push/plain", query, genuine).text == "success"
        forged = build_message(popup("oTwo", "T1", "reject"), "json")
        assert two.post("/wechat/push/plain", query, forged).status_code == 403
        assert two.post("/wechat/push/plain", query, genuine).text == "success"  # retry
        q2, _ = plain(popup("oRace"), nonce="race")
        bodies = [build_message(popup("oRace", f"T{i}"), "json") for i in range(16)]
        answers: list[tuple[int, str]] = []
        start = threading.Barrier(16)

        def race(i: int) -> None:
            start.wait()
            r = (one if i % 2 else two).post("/wechat/push/plain", q2, bodies[i])
            answers.append((r.status_code, r.text))

        threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(answers) == [(200, "success")] + [(403, "forged\n")] * 15
        assert [e.openid for e in stored(any_db)] == ["oTwo", "oRace"]
    finally:
        one.listener.stop()
        two.listener.stop()


def test_nonces_older_than_the_window_are_purged(web: Web) -> None:
    with web.db.connection_context():
        PushNonce.insert_many([
            {"app": "plain", "ts": TS - 3600, "nonce": "old", "body_hash": "0" * 64},
            {"app": "plain", "ts": TS - 200, "nonce": "recent", "body_hash": "0" * 64},
        ]).execute()
    assert web.post("/wechat/push/plain", *plain(popup("oP"), nonce="new")).text == "success"
    with web.db.connection_context():
        kept = sorted(n.nonce for n in PushNonce.select())
    assert kept == ["new", "recent"]


def test_a_safe_mode_replay_only_repeats_the_push(web: Web) -> None:
    query, body = safe(popup("oSafe"))
    for _ in range(3):
        assert web.post("/wechat/push", query, body).text == "success"
    assert len(stored(web.db)) == 1


# ----------------------------------------------------------------- receipts and their rows


def sent_row(db: Any, openid: str, msgid: str, *, app: str | None = None,
             template: str = "order_status", phone: str | None = None) -> int:
    rid = insert_sql(db, template=template, openid=openid, params='["a", 1, "b", "c"]',
                     **({"app": app} if app else {}), **({"phone": phone} if phone else {}))
    with db.connection_context():
        MsgList.update(status="success", msgid=msgid).where(MsgList.id == rid).execute()
    return rid


def receipt_of(db: Any, rid: int) -> tuple[Any, Any]:
    with db.connection_context():
        row = MsgList.get_by_id(rid)
    return row.receipt, row.receipt_error


def test_a_receipt_applies_only_to_its_own_apps_and_users_row(web: Web) -> None:
    db = web.db
    mine = sent_row(db, "oMine", "1001")
    theirs = sent_row(db, "oTheirs", "1002", app="other")
    # another app's push naming this app's row, and a push naming another user's row
    for path, msg in (("/wechat/push/other", sent("oMine", "1001", 3, "failed:forged")),
                      ("/wechat/push", sent("oSomeoneElse", "1001", 3, "failed:forged")),
                      ("/wechat/push", sent("oTheirs", "1002", 3, "failed:forged"))):
        assert web.post(path, *safe(msg, appid=APPID if path == "/wechat/push"
                                    else "wxother000000002")).text == "success"
    done = web.apply()
    assert (done.receipts, done.failed) == (0, 3)
    assert receipt_of(db, mine) == (None, None) and receipt_of(db, theirs) == (None, None)
    errors = [e.error for e in stored(db)]
    assert all("not for row #" in e and "not applied" in e for e in errors), errors
    # the real ones apply
    web.post("/wechat/push", *safe(sent("oMine", "1001")))
    web.post("/wechat/push/other", *safe(sent("oTheirs", "1002", 3, "system failed"),
                                         appid="wxother000000002"))
    assert web.apply().receipts == 2
    assert receipt_of(db, mine) == ("delivered", None)
    assert receipt_of(db, theirs)[0] == "failed"


def test_templatesendjobfinish_applies_to_the_official_accounts_row(web: Web) -> None:
    db = web.db
    rid = sent_row(db, "oaUser", "3001", template="oa_notice")  # app NULL: the template's
    job = PushMessage(to_user="gh_oa", from_user="oaUser", create_time=TS, msg_type="event",
                      event=TEMPLATE_JOB, items=(PushItem.template_job("3001", "success"),))
    # pushed to the mini program's receiver: not the account that sent it
    web.post("/wechat/push", *safe(job))
    assert web.apply().failed == 1 and receipt_of(db, rid) == (None, None)
    web.post("/wechat/push/oa", *safe(job, appid=OA_APPID, nonce="2"))
    assert web.apply().receipts == 1 and receipt_of(db, rid) == ("delivered", None)


def test_an_sms_report_applies_only_to_the_row_of_its_number(web: Web) -> None:
    db = web.db
    rid = sent_row(db, "", "2640:43073307172234681", phone="+8613800138000")

    def report(mobile: str, status: str) -> list[dict[str, str]]:
        return [{"user_receive_time": "2026-12-01 16:00:00", "nationcode": "86",
                 "mobile": mobile, "report_status": status, "errmsg": status,
                 "description": "x", "sid": "2640:43073307172234681"}]

    r = requests.post(f"{web.url}/tencent/sms/status/{SMS_TOKEN}",
                      json=report("13900139000", "FAIL"), timeout=5)
    assert r.json()["result"] == 0
    assert web.apply().failed == 1 and receipt_of(db, rid) == (None, None)
    assert "phone number is not the one of row" in stored(db)[0].error
    requests.post(f"{web.url}/tencent/sms/status/{SMS_TOKEN}",
                  json=report("13800138000", "SUCCESS"), timeout=5)
    assert web.apply().receipts == 1 and receipt_of(db, rid) == ("delivered", None)


# ----------------------------------------------------------------- values no engine stores


def raw_plain(fields: dict[str, Any], nonce: str) -> tuple[dict[str, str], bytes]:
    """A plaintext JSON push with exactly these fields (json.dumps escapes "\\ud800"
    and "\\u0000" as WeChat's JSON would carry them)."""
    query, body = wrap_plain(TOKEN, json.dumps(fields).encode(), TS, nonce)
    query.pop("openid", None)  # WeChat's copy of FromUserName: Herald never reads it
    return query, body


def sent_fields(openid: str, msgid: Any, tid: str = ORDER_TID) -> dict[str, Any]:
    return {"ToUserName": "gh_x", "FromUserName": openid, "CreateTime": TS,
            "MsgType": "event", "Event": "subscribe_msg_sent_event",
            "List": {"TemplateId": tid, "MsgID": msgid, "ErrorCode": 0,
                     "ErrorStatus": "success"}}


def test_values_no_engine_stores_are_refused_at_the_receiver(web: Web) -> None:
    cases = {
        "NUL in MsgID": sent_fields("oN", "1234\u0000"),
        "NUL in FromUserName": sent_fields("o\u0000N", "1"),
        "lone surrogate in TemplateId": sent_fields("oS", "2", "T\ud800"),
        "lone surrogate in FromUserName": sent_fields("o\udfffS", "3"),
        "MsgID over 32": sent_fields("oL", "9" * 33),
        "openid over 128": sent_fields("o" * 129, "4"),
        "TemplateId over 128": sent_fields("oT", "5", "t" * 129),
    }
    for i, (name, fields) in enumerate(cases.items()):
        r = web.post("/wechat/push/plain", *raw_plain(fields, f"n{i}"))
        assert (r.status_code, r.text) == (400, "unstorable\n"), name
    # a payload over 65,535 bytes from a 64 KiB body (tabs and newlines double in JSON)
    xml = (b"<xml><ToUserName>a" + b"\t\n" * 30000 + b"a</ToUserName><FromUserName>oX"
           b"</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType></xml>")
    r = web.post("/wechat/push/plain", *wrap_plain(TOKEN, xml, TS, "big"))
    assert (r.status_code, r.text) == (400, "unstorable\n")
    # in safe mode too, and a whole SMS batch when one report holds one
    q, b = safe(json.dumps(sent_fields("oE", "6\u0000")).encode())
    q.pop("openid", None)
    assert web.post("/wechat/push", q, b).status_code == 400
    for odd in ({"description": "\ud800"}, {"mobile": "138\u0000"}):
        batch = [{"sid": "ok-1", "report_status": "SUCCESS", "mobile": "1"},
                 {"sid": "ok-2", "report_status": "SUCCESS", **odd}]
        r = requests.post(f"{web.url}/tencent/sms/status/{SMS_TOKEN}",
                          data=json.dumps(batch).encode(), timeout=5)
        assert r.status_code == 400 and r.json()["errmsg"] == "unstorable"
    assert stored(web.db) == []
    assert web.refused() == {"refused:unstorable": len(cases) + 4}
    # and what comes next is stored and applied
    assert web.post("/wechat/push", *safe(popup("oNext"))).text == "success"
    assert web.apply().grants == 1


def app_event(db: Any, kind: str, openid: str | None, payload: str, source: str = "app",
              app: str = "default") -> None:
    p = db.param
    with db.connection_context():
        db.execute_sql(f"INSERT INTO push_event (app, source, kind, openid, payload) VALUES "
                       f"({p}, {p}, {p}, {p}, {p})", (app, source, kind, openid, payload))


def test_events_holding_values_no_engine_stores_are_closed_and_the_rest_applies(web: Web
                                                                                ) -> None:
    """What applications insert themselves is JSON text any engine stores; its decoded
    values may still be a NUL, a lone surrogate or too long for the columns they go to.
    Each such event is closed with its error and the grant after them applies in the
    same run (on PostgreSQL a NUL used to fail every run after it)."""
    db = web.db
    bad = [
        ("grant", "oA", '{"template_id": "T\\u0000", "result": "accept"}', "template_id"),
        ("grant", "oA", '{"template_id": "T\\ud800", "result": "accept"}', "template_id"),
        ("grant", "oA", json.dumps({"template_id": "t" * 129, "result": "accept"}),
         "template_id"),
        ("subscribe_msg_sent_event", "oA",
         '{"items": [{"msgid": "12\\u00003", "error_code": 0}]}', "MsgID"),
        ("subscribe_msg_sent_event", "oA",
         '{"items": [{"msgid": "\\udc00", "error_code": 0}]}', "MsgID"),
        ("subscribe_msg_sent_event", "oA",
         json.dumps({"items": [{"msgid": "7" * 33, "error_code": 0}]}), "MsgID"),
        ("sms_status", None, '{"sid": "\\u0000", "report_status": "SUCCESS"}', "sid"),
        ("subscribe_msg_popup_event", "oA",
         '{"items": [{"template_id": "\\ud83d", "status": "accept"}]}', "template_id"),
    ]
    for kind, openid, payload, _ in bad:
        app_event(db, kind, openid, payload, source="wechat" if kind != "grant" else "app")
    app_event(db, "grant", "oA", json.dumps({"template_id": ORDER_TID, "result": "accept"}))
    done = web.apply()
    assert (done.failed, done.grants, done.pending) == (len(bad), 1, 0)
    events_ = stored(db)
    for (_, _, _, field), e in zip(bad, events_, strict=False):
        assert e.applied_at is not None and field in e.error, (field, e.error)
    with db.connection_context():
        assert SubscribeGrant.get(SubscribeGrant.openid == "oA").balance == 1


# ----------------------------------------------------------------- the inbox never stalls


PENDING = 20000


def test_thousands_of_waiting_receipts_never_hold_up_what_comes_after(any_db) -> None:
    """20,000 receipts wait for rows that never come; a grant and a receipt that arrive
    after them are applied by `run`'s events job at its next run, and no run looks at
    more than its bound of events."""
    db = any_db
    d = dialect(db)
    p = d.param
    received = NOW - timedelta(seconds=30)
    rows = [("default", "wechat", "subscribe_msg_sent_event", f"oW{i % 97}",
             f"wait-{i}", json.dumps({"items": [{"msgid": f"9{i:012d}", "error_code": 0}]}),
             d.ts(received)) for i in range(PENDING)]
    with db.connection_context(), db.atomic():
        cur = db.cursor()
        for start in range(0, PENDING, 2000):
            cur.executemany(f"INSERT INTO push_event (app, source, kind, openid, dedup_key, "
                            f"payload, received_at) VALUES ({', '.join([p] * 7)})",
                            rows[start:start + 2000])
    rt = SimpleNamespace(db=db, templates=None, daemon_id="test")
    clock_ = {"now": NOW}

    def run() -> events.Applied:
        with db.connection_context():
            return events.run(rt, now=lambda: clock_["now"])

    bound = 20 * events.BATCH + events.RECHECK_PAGES * events.BATCH
    first = [run(), run()]  # the backlog is looked at once: now each waits for its time
    assert sum(r.pending for r in first) == PENDING
    assert all(r.examined <= bound for r in first)
    rid = sent_row(db, "oLate", "5550001")
    app_event(db, "grant", "oLate", json.dumps({"template_id": ORDER_TID, "result": "accept"}))
    app_event(db, "subscribe_msg_sent_event", "oLate",
              json.dumps({"items": [{"msgid": "5550001", "error_code": 0}]}), source="wechat")
    clock_["now"] = NOW + timedelta(seconds=1)
    runs, examined = 0, []
    while True:
        runs += 1
        done = run()
        examined.append(done.examined)
        with db.connection_context():
            granted = SubscribeGrant.select().where(SubscribeGrant.openid == "oLate").count()
        if granted and receipt_of(db, rid)[0] == "delivered" or runs == 5:
            break
    assert runs == 1 and examined == [2]  # the waiting ones were not even looked at
    # when their recheck comes due, a run looks at a bounded share of them, and a new
    # grant is still applied in that same run
    clock_["now"] = NOW + timedelta(minutes=2)
    app_event(db, "grant", "oLater", json.dumps({"template_id": ORDER_TID, "result": "accept"}))
    due = run()
    assert due.grants == 1 and due.rechecked == events.RECHECK_PAGES * events.BATCH
    assert due.examined == 1 + due.rechecked <= bound
    print(f"\n{d.name}: {PENDING} pending; runs until the grant applied: {runs}; "
          f"events examined per run: backlog {[r.examined for r in first]}, "
          f"after {examined}, recheck due {due.examined}")


def test_a_waiting_receipt_is_rechecked_later_and_later_then_closed(web: Web) -> None:
    web.post("/wechat/push", *safe(sent("oLate", "4040404")))
    looks = []
    for seconds in [*range(0, 20, 5), *range(20, 4000, 20)]:
        done = web.apply(timedelta(seconds=seconds))
        if done.examined:
            looks.append(seconds)
        if done.failed:
            break
    # 0, then after about its age each time (5 s at least, 10 min at most), closed
    # at the first look after an hour
    assert looks == [0, 5, 10, 20, 40, 80, 160, 320, 640, 1240, 1840, 2440, 3040, 3640]
    assert "no row has this msgid" in stored(web.db)[0].error


# ----------------------------------------------------------------- check


def test_check_warns_for_a_plaintext_only_push_app(tmp_path: Path, capsys) -> None:
    from tests.support import write_config
    from tests.verbs_support import herald

    cfg = str(write_config(tmp_path, apps={
        "default": {"appid": APPID, "secret": SECRET, "push": {"token": TOKEN}},
        "safe": {"appid": APPID, "secret": SECRET, "push": {"token": TOKEN, "aes_key": KEY}},
    }))
    ran = herald(capsys, "check", "--config", cfg)
    assert ran.code == 0, ran.text
    warned = [line for line in ran.err.splitlines() if "push has no aes_key" in line]
    assert len(warned) == 1 and "apps.default.push" in warned[0]
    assert "safe mode" in warned[0]


def test_stale_and_forged_refusals_log_one_line_without_secrets(web: Web, caplog) -> None:
    query, body = plain(popup("oLog"))
    with caplog.at_level(logging.WARNING, logger="herald.push"):
        web.post("/wechat/push/plain", *plain(popup("oLog"), TS - 3600))
        web.post("/wechat/push/plain", query, body)
        web.post("/wechat/push/plain", query, build_message(popup("oLog", "T2"), "json"))
    lines = [r.getMessage() for r in caplog.records if r.name == "herald.push"]
    assert len(lines) == 2
    assert "stale: timestamp is 3600 s behind this clock" in lines[0]
    assert "forged" in lines[1]
    assert not any(TOKEN in line or "oLog" in line for line in lines)
