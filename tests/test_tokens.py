"""Access tokens: fetched once, shared in access_token, refreshed ahead of expiry,
expired only if still the one that failed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun import freeze_time

import clock
from channels.wechat_api import WeChatClient
from db.models import AccessToken
from jobs import token_refresh
from tests.conftest import SECRET
from tokens import TokenUnavailable


def test_refresh_ahead_of_expiry_under_freezegun(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, jobs={"token_refresh": {"every": "5m"}})
    with freeze_time("2026-11-28 08:00:00") as frozen:
        assert token_refresh.run(rt) == {"default": "ok"}
        assert sandbox.token_calls["stable"] == 1
        first = AccessToken.get_by_id("default")
        assert first.expires_at == clock.now() + timedelta(seconds=7200)
        assert first.refreshed_by == rt.daemon_id

        frozen.tick(timedelta(minutes=100))  # 20 min left: outside the 10 min margin
        token_refresh.run(rt)
        assert sandbox.token_calls["stable"] == 1

        frozen.tick(timedelta(minutes=12))  # 8 min left: refresh now, not at expiry
        token_refresh.run(rt)
        assert sandbox.token_calls["stable"] == 2
        second = AccessToken.get_by_id("default")
        assert second.refreshed_at == clock.now()
        assert second.expires_at > first.expires_at


def test_a_second_daemon_reads_the_shared_token(db, sandbox, runtime_factory):
    a = runtime_factory(db, sandbox)
    b = runtime_factory(db, sandbox)
    now = clock.now()
    ta = a.tokens.get("default", now)
    tb = b.tokens.get("default", now)
    assert ta == tb
    assert a.tokens.fetches + b.tokens.fetches == 1


def test_expire_only_if_still_the_stored_token(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    now = clock.now()
    token = rt.tokens.get("default", now)
    assert rt.tokens.expire("default", "some-older-token", now) is False
    assert AccessToken.get_by_id("default").expires_at > now  # untouched
    assert rt.tokens.expire("default", token, now) is True
    assert AccessToken.get_by_id("default").expires_at == now


def test_credential_error_is_an_alert_not_a_loop(db, sandbox, runtime_factory, caplog):
    rt = runtime_factory(db, sandbox, apps={"default": {"appid": "wxtest0000000001",
                                                        "secret": "wrong-secret-value"}})
    now = clock.now()
    with pytest.raises(TokenUnavailable, match="40125"):
        rt.tokens.get("default", now)
    with pytest.raises(TokenUnavailable):
        rt.tokens.get("default", now + timedelta(seconds=10))
    assert sandbox.token_calls["stable"] == 1  # paused, not hammering
    assert "CONFIGURATION ALERT" in caplog.text
    assert "wrong-secret-value" not in caplog.text
    with pytest.raises(TokenUnavailable):
        rt.tokens.get("default", now + timedelta(minutes=6))
    assert sandbox.token_calls["stable"] == 2  # tried again after the pause


def test_client_timeout_is_real_time_under_freezegun(sandbox):
    sandbox.inject("timeout")
    client = WeChatClient(sandbox.url, timeout=0.5)
    with freeze_time("2026-01-01"):
        ans = client.send("tok", {"touser": "o"})
    assert ans.timed_out and ans.errcode is None
    client.close()


def test_token_manager_rejects_unknown_app(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    with pytest.raises(TokenUnavailable, match="not a configured app"):
        rt.tokens.refresh("shop", clock.now())
    assert rt.tokens.fetches == 0 and sandbox.token_calls["stable"] == 0


def test_token_refresh_job_fails_its_run_when_an_app_has_no_token(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, apps={
        "default": {"appid": "wxtest0000000001", "secret": SECRET},
        "shop": {"appid": "wxunknown", "secret": "nope-nope"},
    })
    with pytest.raises(token_refresh.TokenRefreshFailed) as info:
        token_refresh.run(rt)
    assert set(info.value.problems) == {"shop"} and "40013" in str(info.value)
    assert "nope-nope" not in str(info.value)
    assert AccessToken.get_by_id("default").token  # the good app still got its token
