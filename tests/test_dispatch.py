"""The whole path on SQLite: a row inserted with plain SQL, claimed, rendered, sent to
the sandbox on loopback, and its outcome written back."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import clock
from db.claim import claim_batch
from jobs import dispatch
from tests.conftest import SECRET, MsgList, insert_sql, row

ORDER = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"
GOOD = '["Flat white", 28, "shipped", "thanks"]'


def sql_time(delta: float) -> str:
    t = clock.now() + timedelta(seconds=delta)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def test_plain_sql_row_is_delivered_with_exactly_the_expected_request(db, sandbox,
                                                                      runtime_factory):
    rt = runtime_factory(db, sandbox)
    rid = insert_sql(db, template="order_status", openid="oUser1", params=GOOD)
    stats = dispatch.run(rt)
    assert stats.sent == 1
    [msg] = sandbox.accepted
    assert {k: v for k, v in msg.items() if k != "msgid"} == {
        "touser": "oUser1",
        "template_id": ORDER,
        "page": "pages/order/detail",
        "data": {"thing2": {"value": "Flat white"}, "amount3": {"value": "28元"},
                 "thing11": {"value": "shipped"}, "thing5": {"value": "thanks"}},
        "miniprogram_state": "formal",
        "lang": "zh_CN",
    }
    r = row(rid)
    assert (r.status, r.errcode, r.error, r.attempts) == ("success", 0, None, 1)
    assert r.msgid == msg["msgid"]
    assert r.sent_at is not None and r.claimed_by == rt.daemon_id and r.lease_until is None


def test_msgid_above_2_53_is_stored_exactly(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    rid = insert_sql(db, template="order_status", openid="oUser1", params=GOOD)
    dispatch.run(rt)
    stored = db.execute_sql("SELECT msgid FROM msg_list WHERE id = ?", (rid,)).fetchone()[0]
    assert isinstance(stored, str)
    assert int(stored) > 2**53
    assert stored == sandbox.accepted[0]["msgid"]
    assert str(float(stored)) != stored  # a float would have lost digits


def test_raw_template_id_named_params_and_page_override(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    a = insert_sql(db, template=ORDER, openid="oA", params=GOOD)
    b = insert_sql(db, template="vip_pay_success", openid="oB", params=json.dumps(
        {"member_type": "Gold", "amount": 199, "paid_at": "2026-11-28 10:30", "tip": "hi"}))
    c = insert_sql(db, template="order_status", openid="oC", params=GOOD,
                   page="pages/other?id=9")
    dispatch.run(rt)
    assert [row(i).status for i in (a, b, c)] == ["success"] * 3
    by_user = {m["touser"]: m for m in sandbox.accepted}
    assert by_user["oA"]["template_id"] == ORDER
    assert by_user["oB"]["data"]["amount2"] == {"value": "199元"}
    assert by_user["oC"]["page"] == "pages/other?id=9"


BAD_ROWS = [
    ({"template": "no_such_template", "params": GOOD}, "unknown template 'no_such_template'"),
    ({"template": "order_status", "params": "{not json"}, "params is not valid JSON"),
    ({"template": "order_status", "params": "12"}, "must be a JSON array or object"),
    ({"template": "order_status", "params": '["Tea", 1, "x"]'}, "missing remark"),
    ({"template": "order_status", "params": '["Tea", "1,5", "x", "y"]'},
     "is not a valid amount"),
    ({"template": "order_status", "params": GOOD, "openid": ""}, "openid is empty"),
    ({"template": "", "params": GOOD}, "template is empty"),
    ({"template": "order_status", "params": GOOD, "app": "nope"}, "unknown app 'nope'"),
]


def test_each_bad_row_fails_with_a_reason_and_the_batch_still_delivers(db, sandbox,
                                                                       runtime_factory):
    rt = runtime_factory(db, sandbox)
    good_before = insert_sql(db, template="order_status", openid="oGood1", params=GOOD)
    bad_ids = []
    for cols, _ in BAD_ROWS:
        bad_ids.append(insert_sql(db, **{"openid": "oBad", **cols}))
    good_after = insert_sql(db, template="order_status", openid="oGood2", params=GOOD)
    stats = dispatch.run(rt)
    assert row(good_before).status == "success" and row(good_after).status == "success"
    for rid, (_, reason) in zip(bad_ids, BAD_ROWS, strict=True):
        r = row(rid)
        assert r.status == "fail", (rid, r.error)
        assert reason in r.error
    assert stats.sent == 2 and stats.failed == len(BAD_ROWS)
    assert {m["touser"] for m in sandbox.accepted} == {"oGood1", "oGood2"}


def test_over_long_thing_never_reaches_wechat_untruncated(db, sandbox, runtime_factory, caplog):
    rt = runtime_factory(db, sandbox)
    long_name = "An extraordinarily long product name, far over twenty characters"
    rid = insert_sql(db, template="order_status", openid="oLong",
                     params=json.dumps([long_name, 5, "shipped", "ok"]))
    with caplog.at_level(logging.INFO):
        dispatch.run(rt)
    assert row(rid).status == "success"
    assert sandbox.accepted[0]["data"]["thing2"]["value"] == long_name[:20].rstrip()
    assert all(a.errcode != 47003 for a in sandbox.attempts)
    assert "truncated thing2" in caplog.text


def test_sandbox_would_refuse_the_untruncated_value(sandbox):
    """The check above means something: WeChat's own rule rejects the long value."""
    import requests

    token = requests.post(sandbox.url + "/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": "wxtest0000000001", "secret": SECRET,
    }).json()["access_token"]
    body = {"touser": "o", "template_id": ORDER, "data": {
        "thing2": {"value": "x" * 21}, "amount3": {"value": "1元"},
        "thing11": {"value": "a"}, "thing5": {"value": "b"}}}
    ans = requests.post(sandbox.url + "/cgi-bin/message/subscribe/send",
                        params={"access_token": token}, json=body).json()
    assert ans["errcode"] == 47003 and "thing2" in ans["errmsg"]


def test_future_send_at_waits_expired_fails_cancelled_untouched(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    future = insert_sql(db, template="order_status", openid="oF", params=GOOD,
                        send_at=sql_time(3600))
    expired = insert_sql(db, template="order_status", openid="oE", params=GOOD,
                         expire_at=sql_time(-5))
    cancelled = insert_sql(db, template="order_status", openid="oC", params=GOOD,
                           status="cancelled")
    before = row(cancelled).updated_at
    dispatch.run(rt)
    f, e, c = row(future), row(expired), row(cancelled)
    assert (f.status, f.attempts) == ("wait", 0)
    assert e.status == "fail" and e.error.startswith("expired") and e.attempts == 0
    assert (c.status, c.attempts, c.updated_at) == ("cancelled", 0, before)
    assert sandbox.accepted == []


def test_a_full_batch_claims_the_next_at_once(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, dispatch={"batch_size": 10, "workers": 4})
    for i in range(35):
        insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
    stats = dispatch.run(rt)
    assert stats.claimed == 35 and stats.sent == 35
    assert MsgList.select().where(MsgList.status == "success").count() == 35


def test_priority_first_then_oldest(db):
    low = insert_sql(db, template="order_status", openid="o1", params=GOOD,
                     send_at=sql_time(-60))
    high = insert_sql(db, template="order_status", openid="o2", params=GOOD, priority=5)
    older = insert_sql(db, template="order_status", openid="o3", params=GOOD,
                       send_at=sql_time(-120))
    rows = claim_batch(db, daemon_id="t", now=clock.now(), lease=60, limit=3)
    assert [r.id for r in rows] == [high, older, low]


def test_rows_to_one_openid_go_one_after_another(db, sandbox, runtime_factory):
    sandbox.latency = 0.05
    rt = runtime_factory(db, sandbox, dispatch={"workers": 8})
    for i in range(8):
        insert_sql(db, template="order_status", openid="oSame",
                   params=json.dumps([f"item {i}", 1, "x", "y"]))
    insert_sql(db, template="order_status", openid="oOther", params=GOOD)
    dispatch.run(rt)
    assert sandbox.concurrency_violations() == 0
    assert sandbox.accepted_count("oSame") == 8
    assert MsgList.select().where(MsgList.status == "success").count() == 9


def test_secret_and_token_never_logged_or_stored(db, sandbox, runtime_factory, caplog):
    rt = runtime_factory(db, sandbox)
    for i in range(3):
        insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
    insert_sql(db, template="order_status", openid="oBad", params="[")
    sandbox.inject("reset", times=1, openid="o1")
    sandbox.expire_tokens_after(1)  # forces a 42001, a refresh and a resend
    with caplog.at_level(logging.DEBUG):
        dispatch.run(rt)
        dispatch.run(rt)
    tokens = [c.token for c in rt.tokens._cache.values()]
    assert tokens and rt.tokens.fetches >= 2
    errors = " ".join(r.error or "" for r in MsgList.select())
    for secret in [SECRET, *tokens]:
        assert secret not in caplog.text
        assert secret not in errors


def test_a_template_saved_a_moment_ago_is_found_not_failed(db, tmp_path, runtime_factory):
    """The daemon looks at templates.yaml every 2 s; a row naming a template added since
    makes dispatch look at once instead of failing the row."""
    import os

    from sandbox.wechat import Sandbox
    from tests.conftest import APPID
    from tests.conftest import SECRET as S

    path = tmp_path / "templates.yaml"
    path.write_text("a:\n  template_id: A1\n  data: {thing1: first}\n")
    with Sandbox(apps={APPID: S}) as open_sandbox:
        rt = runtime_factory(db, open_sandbox, templates=str(path))
        path.write_text("a:\n  template_id: A1\n  data: {thing1: first}\n"
                        "b:\n  template_id: B1\n  data: {thing1: second}\n")
        os.utime(path, (1, 1))
        rid = insert_sql(db, template="b", openid="o1")
        dispatch.run(rt)
        assert row(rid).status == "success", row(rid).error
        missing = insert_sql(db, template="c", openid="o1")
        dispatch.run(rt)
        assert row(missing).status == "fail" and "unknown template 'c'" in row(missing).error
