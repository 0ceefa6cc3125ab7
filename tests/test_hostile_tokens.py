"""The token endpoints' hostile answers: 40001 (on stable_token a wrong secret, not a
stale token), expires_in 0, negative, NaN, 1e12, text; and no secret in any error."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

import clock
from channels.base import Kind
from channels.wechat_api import WeChatClient
from db.models import AccessToken
from jobs import dispatch
from tests.conftest import APPID, SECRET, insert_sql, row
from tokens import TokenUnavailable

GOOD = '["Tea", 3, "shipped", "ok"]'
BAD_CREDENTIAL = {"errcode": 40001, "errmsg": f"invalid credential, secret {SECRET} wrong"}


@pytest.mark.parametrize("source", ["stable", "legacy"])
def test_40001_from_the_token_endpoint_is_a_credential_problem(sandbox, source):
    # a secret nothing else in this process has registered for redaction, echoed back
    secret = f"never-seen-{source}-secret-7f3a9"
    sandbox.token_answer({"errcode": 40001, "errmsg": f"invalid credential {secret}"})
    client = WeChatClient(sandbox.url, timeout=2)
    fetch = client.stable_token if source == "stable" else client.legacy_token
    ans = fetch(APPID, secret)
    # on a send, 40001 means "expire the token and resend"; here it means the secret
    # is wrong: an alert, never a refresh-and-resend loop
    assert ans.kind is Kind.CREDENTIAL and ans.errcode == 40001
    assert secret not in ans.reason and "40001" in ans.reason
    client.close()


def test_40001_at_the_token_endpoint_holds_rows_and_alerts_once(db, sandbox, runtime_factory,
                                                                caplog):
    rt = runtime_factory(db, sandbox)
    rid = insert_sql(db, template="order_status", openid="oTok", params=GOOD)
    sandbox.token_answer(BAD_CREDENTIAL, times=5)
    with caplog.at_level(logging.INFO):
        stats = dispatch.run(rt)
    assert stats.sent == 0
    r = row(rid)
    assert (r.status, r.attempts) == ("wait", 0)  # held, the attempt refunded
    assert "40001" in r.error and SECRET not in r.error
    assert sandbox.token_calls["stable"] == 1  # one fetch, then the pause: no loop
    assert sandbox.attempts == []  # nothing was sent with a token it does not have
    assert "CONFIGURATION ALERT" in caplog.text and SECRET not in caplog.text
    assert rt.tokens.alerts() and SECRET not in str(rt.tokens.alerts())


@pytest.mark.parametrize(("expires_in", "usable"), [
    (0, False), (-7200, False), (float("nan"), False), (float("inf"), False),
    ("7200", False), (True, False), (None, False),
    (1e12, True), (7200, True), (5, True),
])
def test_expires_in_is_checked_and_clamped(db, sandbox, runtime_factory, expires_in, usable):
    rt = runtime_factory(db, sandbox)
    now = clock.now()
    answer = {"access_token": "tok-from-the-endpoint-0123456789"}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    sandbox.token_answer(answer)
    if not usable:
        with pytest.raises(TokenUnavailable, match="expires_in"):
            rt.tokens.get("default", now)
        assert AccessToken.get_or_none(AccessToken.app == "default").token is None
        return
    token = rt.tokens.get("default", now)
    assert token == "tok-from-the-endpoint-0123456789"
    stored = AccessToken.get_by_id("default")
    # never believed past WeChat's documented 7200 s, never a moment in the past
    assert now < stored.expires_at <= now + timedelta(seconds=7200)
    if expires_in == 5:
        # a short-lived token is used while it lasts, not fetched again for every send
        assert rt.tokens.get("default", now + timedelta(seconds=2)) == token
        assert sandbox.token_calls["stable"] == 1
    assert "tok-from-the-endpoint" not in str(rt.tokens.alerts())


def test_a_token_answer_without_a_token_is_transient(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    for bad in ({"expires_in": 7200}, {"access_token": "", "expires_in": 7200},
                {"access_token": "x" * 5000, "expires_in": 7200},
                {"access_token": 12345, "expires_in": 7200},
                # WeChat's tokens are printable ASCII: anything else could not be sent
                # (a lone surrogate fails to encode at every send) or is not WeChat's
                {"access_token": "tok-\udc80-en", "expires_in": 7200},
                {"access_token": "tok en", "expires_in": 7200},
                {"access_token": "tok\r\nX-Injected: 1", "expires_in": 7200},
                {"access_token": "tök", "expires_in": 7200}):
        client = WeChatClient(sandbox.url, timeout=2)
        sandbox.token_answer(bad)
        ans = client.stable_token(APPID, SECRET)
        assert ans.kind is Kind.TRANSIENT and "access_token" in ans.reason
        client.close()
    assert rt.tokens.fetches == 0
