"""The oa_template channel (an official account's template/send) against the WeChat
sandbox: the request as recorded, the account's own token, client_msg_id idempotency,
and every answer class with its Kind."""

from __future__ import annotations

from pathlib import Path

import pytest

import clock
from channels.base import Kind
from channels.oa_template import OaTemplate
from channels.wechat_api import WeChatClient
from db.models import MsgList
from jobs import dispatch
from sandbox.wechat import Sandbox
from templates import render_row
from tests.channel_support import (
    OA_APPID,
    OA_SECRET,
    OA_TID,
    PARAMS,
    load,
    overrides,
    token,
    with_official_account,
    write_templates,
)
from tests.conftest import APPID, SECRET, insert_sql, row


@pytest.fixture
def db(any_db):
    """Rows go through every dialect (servers skip unless configured)."""
    return any_db


@pytest.fixture
def templates_path(tmp_path: Path) -> Path:
    return write_templates(tmp_path)


@pytest.fixture
def oa_sandbox(sandbox):
    return with_official_account(sandbox)


def built(templates_path: Path, openid: str = "oFan1", row_id: int = 41):
    tset = load(templates_path)
    return render_row(tset, template="order_oa", openid=openid, params=PARAMS, row_id=row_id,
                      app="shop_oa").built


def sender(sb: Sandbox, timeout: float = 2) -> OaTemplate:
    return OaTemplate(WeChatClient(sb.url, timeout=timeout), {"default": APPID})


def test_a_row_is_sent_with_the_accounts_own_token_and_its_id_as_client_msg_id(
        db, oa_sandbox, runtime_factory, templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    rid = insert_sql(db, template="order_oa", openid="oFan1", params=PARAMS)
    stats = dispatch.run(rt)
    assert stats.sent == 1
    [msg] = oa_sandbox.oa_accepted
    msgid = msg.pop("msgid")
    assert msg == {
        "touser": "oFan1",
        "template_id": OA_TID,
        "url": "https://shop.example/order",
        "miniprogram": {"appid": APPID, "pagepath": "pages/order/detail"},
        "client_msg_id": str(rid),
        "data": {"thing2": {"value": "Flat white"}, "thing11": {"value": "shipped"}},
        "from_appid": OA_APPID,  # the official account's token, not the mini program's
    }
    r = row(rid)
    assert (r.status, r.errcode, r.msgid) == ("success", 0, msgid)


def test_a_template_naming_a_mini_program_app_is_refused_at_load(db, oa_sandbox,
                                                                  runtime_factory, tmp_path):
    path = write_templates(tmp_path)
    path.write_text(path.read_text().replace("  app: shop_oa\n", "  app: default\n"))
    with pytest.raises(Exception, match="is a miniprogram; an oa_template message"):
        runtime_factory(db, oa_sandbox, **overrides(path))


def test_a_row_for_another_app_is_refused_before_sending(db, oa_sandbox, runtime_factory,
                                                        templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    rid = insert_sql(db, template="order_oa", openid="oFan1", params=PARAMS, app="default")
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "fail" and "belongs to app 'shop_oa'" in r.error
    assert oa_sandbox.oa_accepted == []


# -- client_msg_id: a resend cannot deliver twice ------------------------------------------

def test_a_resend_of_the_same_row_is_accepted_without_a_second_delivery(oa_sandbox,
                                                                       templates_path):
    s = sender(oa_sandbox)
    tok = token(oa_sandbox, OA_APPID, OA_SECRET)
    first = s.send(built(templates_path), tok)
    again = s.send(built(templates_path), tok)
    other_row = s.send(built(templates_path, row_id=42), tok)
    s.client.close()
    assert first.kind is again.kind is Kind.SUCCESS
    assert again.msgid == first.msgid  # WeChat answers with the first send's msgid
    assert len(oa_sandbox.oa_accepted) == 2  # row 41 once, row 42 once
    assert oa_sandbox.oa_repeats == [{"touser": "oFan1", "client_msg_id": "41",
                                      "msgid": first.msgid}]
    assert other_row.msgid != first.msgid


def test_client_msg_id_holds_for_ten_minutes_only(tmp_path):
    now = [1_800_000_000.0]
    with Sandbox(apps={APPID: SECRET}, clock=lambda: now[0]) as sb:
        with_official_account(sb)
        path = write_templates(tmp_path)
        s = sender(sb)
        tok = token(sb, OA_APPID, OA_SECRET)
        s.send(built(path), tok)
        now[0] += 599
        s.send(built(path), tok)
        now[0] += 2  # 601 s after the first
        s.send(built(path), tok)
        s.client.close()
        assert len(sb.oa_accepted) == 2 and len(sb.oa_repeats) == 1


def test_a_timeout_after_delivery_then_a_retry_delivers_once(db, oa_sandbox, runtime_factory,
                                                            templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    rid = insert_sql(db, template="order_oa", openid="oFan1", params=PARAMS)
    oa_sandbox.inject("lost_answer", endpoint="template")  # delivered, answer lost
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "wait" and "may have delivered" in r.error
    MsgList.update(send_at=clock.now()).where(MsgList.id == rid).execute()
    dispatch.run(rt)
    r = row(rid)
    assert (r.status, r.attempts) == ("success", 2)
    assert len(oa_sandbox.oa_accepted) == 1  # one delivery for two sends
    [repeat] = oa_sandbox.oa_repeats
    assert repeat["client_msg_id"] == str(rid) and r.msgid == repeat["msgid"]


# -- every answer class, with the Kind each must give (written here, not read) -----------

INJECTED = [
    (0, Kind.SUCCESS), (-1, Kind.TRANSIENT), (40001, Kind.TOKEN), (42001, Kind.TOKEN),
    (45011, Kind.QUOTA_MINUTE), (45009, Kind.QUOTA_DAY), (43108, Kind.USER_BUSY),
    (40003, Kind.PERMANENT), (40013, Kind.PERMANENT), (40036, Kind.PERMANENT),
    (40037, Kind.PERMANENT), (40165, Kind.PERMANENT), (43004, Kind.PERMANENT),
    (43019, Kind.PERMANENT), (43116, Kind.PERMANENT), (47003, Kind.PERMANENT),
    (48001, Kind.PERMANENT), (48002, Kind.PERMANENT), (88888, Kind.PERMANENT),
    ("http_503", Kind.TRANSIENT), ("non_json", Kind.TRANSIENT), ("reset", Kind.TRANSIENT),
]


@pytest.mark.parametrize(("fault", "kind"), INJECTED, ids=[str(f) for f, _ in INJECTED])
def test_every_answer_class_gives_its_kind(oa_sandbox, templates_path, fault, kind):
    s = sender(oa_sandbox)
    tok = token(oa_sandbox, OA_APPID, OA_SECRET)
    if fault != 0:
        oa_sandbox.inject(fault, endpoint="template")
    try:
        answer = s.send(built(templates_path), tok)
    finally:
        s.client.close()
    assert answer.kind is kind, answer.reason
    if isinstance(fault, int) and fault:
        assert answer.errcode == fault
    assert tok not in answer.reason


def test_judged_answers(oa_sandbox, templates_path):
    s = sender(oa_sandbox)
    oa_tok = token(oa_sandbox, OA_APPID, OA_SECRET)
    mini_tok = token(oa_sandbox)
    oa_sandbox.unfollow("oGone")
    try:
        gone = s.send(built(templates_path, "oGone"), oa_tok)
        wrong_token = s.send(built(templates_path), mini_tok)  # a mini program's token
        unlinked = OaTemplate(s.client, {"default": "wxunlinked0000001x"}).send(
            built(templates_path), oa_tok)
        oa_sandbox.oa_templates = {}
        unknown = s.send(built(templates_path, row_id=99), oa_tok)
    finally:
        s.client.close()
    assert (gone.kind, gone.errcode) == (Kind.PERMANENT, 43004)
    assert "does not follow the official account" in gone.reason
    assert (wrong_token.kind, wrong_token.errcode) == (Kind.PERMANENT, 48001)
    assert (unlinked.kind, unlinked.errcode) == (Kind.PERMANENT, 40013)
    assert (unknown.kind, unknown.errcode) == (Kind.PERMANENT, 40037)
    assert oa_sandbox.oa_accepted == []


def test_43004_falls_back_to_sms(db, oa_sandbox, runtime_factory, templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    oa_sandbox.unfollow("oGone")
    rid = insert_sql(db, template="order_oa", openid="oGone", phone="+8613800138000",
                     params=PARAMS)
    dispatch.run(rt)
    parent = row(rid)
    [hop] = MsgList.select().where(MsgList.parent_id == rid)
    assert parent.status == "fail" and parent.errcode == 43004
    assert f"fell back to row {hop.id} (order_sms)" in parent.error
    assert (hop.template, hop.status, hop.phone) == ("order_sms", "wait", "+8613800138000")
