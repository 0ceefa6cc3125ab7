"""No database lock is held while Herald waits on a remote, on all three engines.

Every remote call of the daemon (WeChat sends on the three WeChat channels, the token
endpoint, Tencent Cloud SMS, webhooks) goes through urllib3's HTTPConnectionPool.urlopen; the
watch (tests/io_guard.py) checks at each call that the calling thread has no
transaction open, and, while the call is in flight (every remote 1.2 s slow), that
another connection can take the write lock (SQLite) or lock every row of access_token,
msg_list and push_event (PostgreSQL, MySQL). The jobs that call no remote (stale_retry,
purge, the events applier) are run under the same watch to show they call none.

On the web side the request is read whole before the app runs (waitress buffers it),
so a slow client holds no transaction either: checked with a client that stalls mid-body.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

import clock
from db.models import MsgList
from jobs import dispatch, events, purge, stale_retry, token_refresh
from sandbox.sms import SmsSandbox
from sandbox.webhook import WebhookSandbox
from tests.channel_support import (
    HOOK_SECRET,
    PARAMS,
    SMS_TID,
    overrides,
    with_official_account,
    write_templates,
)
from tests.conftest import _url_of, insert_sql, make_config
from tests.io_guard import LockProbe, NetworkWatch

SLOW = 1.2


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}, latency=SLOW) as sb:
        yield sb


@pytest.fixture
def hook() -> Iterator[WebhookSandbox]:
    with WebhookSandbox(HOOK_SECRET, latency=SLOW) as sb:
        yield sb


def test_no_remote_call_runs_inside_a_transaction(any_db, sandbox, sms_sandbox, hook,
                                                  runtime_factory, tmp_path):
    db = any_db
    url = _url_of(db, tmp_path)
    with_official_account(sandbox)
    sandbox.latency = SLOW
    sandbox.token_latency = SLOW
    templates = write_templates(tmp_path, hook_url=hook.url + "/hook")
    # on_stale: fail writes started_at before each send: that write must be over too
    rt = runtime_factory(db, sandbox, http={"timeout": "5s"},
                         dispatch={"workers": 4, "on_stale": "fail", "lease": "30s"},
                         **overrides(templates, sms_sandbox.url))
    rows = [
        insert_sql(db, template="order_status", openid="oSub", params=PARAMS),
        insert_sql(db, template="order_uniform", openid="oUni", params=PARAMS),
        insert_sql(db, template="order_oa", openid="oOa", params=PARAMS),
        insert_sql(db, template="order_sms", openid="oSms", phone="+8613800138000",
                   params=PARAMS),
        insert_sql(db, template="order_hook", openid="oHook", params=PARAMS),
    ]
    watch = NetworkWatch(db, url, probe_during=True, probe_wait=0.5)
    with watch.watching():
        stats = dispatch.run(rt)  # tokens fetched on the way (1.2 s each)
        assert stats.sent == len(rows), stats
        # every token goes stale: the next send answers 42001, the token is expired
        # (compare-and-expire), fetched again and the row sent again
        sandbox.expire_tokens()
        again = insert_sql(db, template="order_status", openid="oSub2", params=PARAMS)
        assert dispatch.run(rt).sent == 1
        token_refresh.run(rt, now=lambda: clock.now() + timedelta(hours=1, minutes=55))
    calls, probes = watch.calls, watch.probes
    assert not watch.violations, watch.report()
    # 5 first sends, 2 tokens (mini program, account) at first, the 42001, its token and
    # the resend, the refresh ahead of expiry (2 apps): each with a probe in flight
    assert calls >= 11 and probes == calls, (calls, probes)
    with db.connection_context():
        assert {r.status for r in MsgList.select().where(MsgList.id.in_([*rows, again]))} == {
            "success"}

    with watch.watching():
        stale_retry.run(rt)
        purge.run(rt, now=lambda: clock.now() + timedelta(days=400))
        events.run(rt)
    assert watch.calls == calls and not watch.violations  # these call no remote at all


def test_a_slow_client_holds_no_transaction_on_the_web_side(any_db, sandbox, tmp_path):
    """A client that sends half its body and stalls: the app has not run yet, the
    database takes writes; the request is handled once the body is whole."""
    from web import server
    from web.push import make_app

    url = _url_of(any_db, tmp_path)
    cfg = make_config(url, sandbox.url, tmp_path, console={"listen": None})
    ctx = server.build(cfg, any_db)
    inner = make_app(ctx)
    called: list[float] = []

    def app(environ, start_response):
        called.append(time.monotonic())
        return inner(environ, start_response)

    listener = server.Listener(app, "127.0.0.1", 0, name="push").start()
    try:
        body = b'{"ToUserName": "gh_x", "MsgType": "event"}'
        with socket.create_connection((listener.host, listener.port), timeout=10) as sock:
            sock.sendall(b"POST /wechat/push/default?signature=x&timestamp=1&nonce=2 "
                         b"HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                         + body[:10])
            time.sleep(1.0)  # the client stalls mid-body
            assert called == []  # the app is not running: nothing can be held
            assert LockProbe(url).check(0.5) is None
            sock.sendall(body[10:])
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 ") and len(called) == 1
    finally:
        listener.stop()
