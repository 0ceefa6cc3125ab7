"""The uniform channel (统一服务消息) against the WeChat sandbox on loopback: the request
as the sandbox recorded it, every answer class with its Kind, and hostile answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from channels.base import Kind
from channels.uniform import UNIFORM_PATH, Uniform
from channels.wechat_api import WeChatClient
from jobs import dispatch
from templates import render_row
from tests.channel_support import (
    OA_APPID,
    OA_TID,
    PARAMS,
    load,
    overrides,
    token,
    with_official_account,
    write_templates,
)
from tests.conftest import APPID, insert_sql, row
from tests.sms_support import fixed_server


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


def built(templates_path: Path, openid: str = "oUser1", page: str | None = None):
    tset = load(templates_path)
    return render_row(tset, template="order_uniform", openid=openid, params=PARAMS,
                      page=page, row_id=41).built


def test_a_row_is_delivered_with_exactly_the_expected_request(db, oa_sandbox, runtime_factory,
                                                             templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    rid = insert_sql(db, template="order_uniform", openid="oUser1", params=PARAMS)
    stats = dispatch.run(rt)
    assert stats.sent == 1
    [msg] = oa_sandbox.uniform_accepted
    assert msg == {
        "touser": "oUser1",
        "mp_template_msg": {
            "appid": OA_APPID,
            "template_id": OA_TID,
            "url": "https://shop.example/order",
            "miniprogram": {"appid": APPID, "pagepath": "pages/order/detail"},
            "data": {"thing2": {"value": "Flat white"}, "thing11": {"value": "shipped"}},
        },
        "from_appid": APPID,  # sent with the mini program's own token
    }
    r = row(rid)
    assert (r.status, r.errcode, r.error, r.msgid) == ("success", 0, None, None)


def test_the_row_page_overrides_the_template_page(db, oa_sandbox, runtime_factory,
                                                 templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    insert_sql(db, template="order_uniform", openid="oUser1", params=PARAMS,
               page="pages/other?id=9")
    dispatch.run(rt)
    [msg] = oa_sandbox.uniform_accepted
    assert msg["mp_template_msg"]["miniprogram"]["pagepath"] == "pages/other?id=9"


def test_render_shows_the_app_appid_when_the_config_is_known(tmp_path, templates_path):
    from tests.conftest import make_config

    cfg = make_config("sqlite:///x.db", "http://127.0.0.1:9", tmp_path, **overrides(
        templates_path))
    tset = load(templates_path, cfg)
    req = render_row(tset, template="order_uniform", openid="oU", params=PARAMS)
    assert req.body["mp_template_msg"]["miniprogram"]["appid"] == APPID
    assert req.built.token_app == "default" and req.built.target == f"POST {UNIFORM_PATH}"


# -- every answer class, with the Kind each must give (written here, not read) -----------

INJECTED = [
    (0, Kind.SUCCESS), (-1, Kind.TRANSIENT), (40001, Kind.TOKEN), (40014, Kind.TOKEN),
    (42001, Kind.TOKEN), (45011, Kind.QUOTA_MINUTE), (45009, Kind.QUOTA_DAY),
    (43108, Kind.USER_BUSY), (40003, Kind.PERMANENT), (40013, Kind.PERMANENT),
    (40036, Kind.PERMANENT), (40037, Kind.PERMANENT), (41028, Kind.PERMANENT),
    (41029, Kind.PERMANENT), (41030, Kind.PERMANENT), (43004, Kind.PERMANENT),
    (43019, Kind.PERMANENT), (43116, Kind.PERMANENT), (45168, Kind.PERMANENT),
    (47001, Kind.PERMANENT), (47003, Kind.PERMANENT), (48001, Kind.PERMANENT),
    (48002, Kind.PERMANENT), (99999, Kind.PERMANENT),
    ("http_500", Kind.TRANSIENT), ("http_502", Kind.TRANSIENT), ("non_json", Kind.TRANSIENT),
    ("reset", Kind.TRANSIENT),
]


@pytest.mark.parametrize(("fault", "kind"), INJECTED, ids=[str(f) for f, _ in INJECTED])
def test_every_answer_class_gives_its_kind(oa_sandbox, templates_path, fault, kind):
    client = WeChatClient(oa_sandbox.url, timeout=2)
    sender = Uniform(client, {"default": APPID})
    tok = token(oa_sandbox)
    if fault != 0:
        oa_sandbox.inject(fault, endpoint="uniform")
    try:
        answer = sender.send(built(templates_path), tok)
    finally:
        client.close()
    assert answer.kind is kind, answer.reason
    if isinstance(fault, int) and fault:
        assert answer.errcode == fault and str(fault) in answer.reason
    assert tok not in answer.reason


def test_a_timeout_is_transient_and_says_it_may_have_delivered(oa_sandbox, templates_path):
    client = WeChatClient(oa_sandbox.url, timeout=0.5)
    oa_sandbox.inject("timeout", endpoint="uniform")
    try:
        answer = Uniform(client, {"default": APPID}).send(built(templates_path),
                                                          token(oa_sandbox))
    finally:
        client.close()
    assert (answer.kind, answer.timed_out) == (Kind.TRANSIENT, True)
    assert "may have delivered" in answer.reason


def test_judged_answers_binding_following_page_template(oa_sandbox, templates_path):
    client = WeChatClient(oa_sandbox.url, timeout=2)
    tok = token(oa_sandbox)
    try:
        # the user does not follow the official account
        oa_sandbox.unfollow("oGone")
        gone = Uniform(client, {"default": APPID}).send(built(templates_path, "oGone"), tok)
        # the account is not bound to this mini program
        other = Uniform(client, {"default": "wxnotbound000001x"}).send(
            built(templates_path), tok)
        # a page the released mini program does not have
        oa_sandbox.pages = {"pages/order/detail"}
        page = Uniform(client, {"default": APPID}).send(
            built(templates_path, page="pages/nowhere"), tok)
        # a template the account does not have
        oa_sandbox.oa_templates = {"another": ["thing2", "thing11"]}
        tid = Uniform(client, {"default": APPID}).send(built(templates_path), tok)
    finally:
        client.close()
    assert (gone.kind, gone.errcode) == (Kind.PERMANENT, 43004)
    assert "does not follow the official account" in gone.reason
    assert (other.kind, other.errcode) == (Kind.PERMANENT, 40013)
    assert "not an official account bound to this mini program" in other.reason
    assert (page.kind, page.errcode) == (Kind.PERMANENT, 41030)
    assert (tid.kind, tid.errcode) == (Kind.PERMANENT, 40037)
    assert oa_sandbox.uniform_accepted == []


def test_a_stale_token_is_resent_once_with_a_fresh_one(db, oa_sandbox, runtime_factory,
                                                      templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    rid = insert_sql(db, template="order_uniform", openid="oUser1", params=PARAMS)
    rt.tokens.get("default", __import__("clock").now())  # a token is cached...
    oa_sandbox.expire_tokens()  # ...and goes stale before the send
    dispatch.run(rt)
    assert row(rid).status == "success"
    assert len(oa_sandbox.uniform_accepted) == 1


def test_a_uniform_template_naming_an_official_account_is_refused_at_load(
        db, oa_sandbox, runtime_factory, tmp_path):
    path = write_templates(tmp_path)
    text = path.read_text().replace("  oa_appid:", "  app: shop_oa\n  oa_appid:", 1)
    path.write_text(text)
    with pytest.raises(Exception, match="is an official_account"):
        runtime_factory(db, oa_sandbox, **overrides(path))


def test_unknown_app_kind_mismatch_at_row_time_fails_the_row(db, oa_sandbox, runtime_factory,
                                                            templates_path):
    rt = runtime_factory(db, oa_sandbox, **overrides(templates_path))
    rid = insert_sql(db, template="order_uniform", openid="oU", params=PARAMS, app="shop_oa")
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "fail" and "is sent by a mini program" in r.error
    assert oa_sandbox.uniform_accepted == []


# -- hostile answers: each costs its row alone, with a clear reason -----------------------

HOSTILE = [
    (b'{"errcode": "abc"}', Kind.TRANSIENT, "unexpected errcode"),
    (b'{"errcode": [1, 2]}', Kind.TRANSIENT, "unexpected errcode"),
    (b'{"errcode": true}', Kind.TRANSIENT, "unexpected errcode"),
    (b'[1, 2, 3]', Kind.TRANSIENT, "not JSON"),
    (b'<html>' + b'x' * 2_000_000 + b'</html>', Kind.TRANSIENT, "not JSON"),
    (b'{"errcode": 0, "msgid": 1.5e300}', Kind.SUCCESS, "float"),
    (b'{"errcode": 43004, "errmsg": {"nested": "object"}}', Kind.PERMANENT, "43004"),
    (b'{"errcode": 1e400}', Kind.TRANSIENT, "unexpected errcode"),
    (b'{"errcode": 0, "pad": "' + b' ' * (5 * 1024 * 1024) + b'"}', Kind.TRANSIENT,
     "over 4 MiB"),
]


@pytest.mark.parametrize(("reply", "kind", "said"), HOSTILE,
                         ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_answers_are_classified_with_a_reason(templates_path, reply, kind, said):
    with fixed_server(lambda h, b: (200, "application/json", reply)) as url:
        client = WeChatClient(url, timeout=2)
        try:
            answer = Uniform(client, {"default": APPID}).send(built(templates_path),
                                                              "secret-token-value")
        finally:
            client.close()
    assert answer.kind is kind
    assert said in answer.reason
    assert "secret-token-value" not in answer.reason and len(answer.reason) < 400


def test_the_token_never_appears_even_when_echoed(templates_path):
    def echo(handler, body):
        return 200, "application/json", json.dumps(
            {"errcode": 40013, "errmsg": f"bad {handler.path}"}).encode()

    with fixed_server(echo) as url:
        client = WeChatClient(url, timeout=2)
        try:
            answer = Uniform(client, {"default": APPID}).send(built(templates_path), "T0KEN123")
        finally:
            client.close()
    assert answer.kind is Kind.PERMANENT and "T0KEN123" not in answer.reason
