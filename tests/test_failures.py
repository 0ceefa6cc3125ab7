"""Failure handling: every errcode's action, back-off, quotas, token errors, rate limit,
lease recovery and ownership, a database that goes away, hostile rows."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import peewee
import pytest

import clock
from channels.wechat_api import Answer, WeChatClient
from channels.wechat_errors import ERRCODES, Kind, meaning
from config import RetryConfig
from db.claim import claim_batch, mark_started
from db.models import AccessToken, MsgList
from db.outcomes import Outcome, record
from jobs import dispatch, stale_retry
from policy import backoff_delay, decide
from tests.conftest import APPID, SECRET, insert_sql, make_config, row

GOOD = '["Tea", 3, "shipped", "ok"]'
T0 = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)


def at(t: datetime):
    return lambda: t


def retry_cfg(tmp_path, **retry) -> RetryConfig:
    return make_config("sqlite:///x.db", "http://127.0.0.1:9", tmp_path, retry=retry).retry


# -- the classification table -----------------------------------------------------------
TRANSPORT_FAULTS = ["http_500", "http_502", "http_503", "non_json", "reset", "timeout"]

# What each errcode must mean, written here and not read from channels/wechat_errors.py:
# DESIGN.md's table (send endpoint) and its token-endpoint list, plus the codes the
# table documents beyond them. A code added to the module without a line here fails
# test_the_table_and_the_expectation_name_the_same_codes.
EXPECTED_KIND: dict[int, Kind] = {
    0: Kind.SUCCESS,
    -1: Kind.TRANSIENT,
    40001: Kind.TOKEN, 40014: Kind.TOKEN, 42001: Kind.TOKEN,
    45011: Kind.QUOTA_MINUTE,
    45009: Kind.QUOTA_DAY,
    43108: Kind.USER_BUSY,
    40003: Kind.PERMANENT, 40037: Kind.PERMANENT, 41030: Kind.PERMANENT,
    43101: Kind.PERMANENT, 43107: Kind.PERMANENT, 45168: Kind.PERMANENT,
    47001: Kind.PERMANENT, 47003: Kind.PERMANENT, 48001: Kind.PERMANENT,
    40002: Kind.CREDENTIAL, 40013: Kind.CREDENTIAL, 40125: Kind.CREDENTIAL,
    40164: Kind.CREDENTIAL, 40243: Kind.CREDENTIAL, 41002: Kind.CREDENTIAL,
    41004: Kind.CREDENTIAL, 50004: Kind.CREDENTIAL, 50007: Kind.CREDENTIAL,
    89501: Kind.CREDENTIAL, 89503: Kind.CREDENTIAL, 89506: Kind.CREDENTIAL,
    89507: Kind.CREDENTIAL,
}
# what the row then does (policy.decide), for the send endpoint's kinds
EXPECTED_ACTION = {
    Kind.SUCCESS: "success", Kind.PERMANENT: "fail", Kind.TRANSIENT: "wait",
    Kind.USER_BUSY: "wait", Kind.QUOTA_MINUTE: "wait", Kind.QUOTA_DAY: "wait",
    Kind.CREDENTIAL: "wait", Kind.TOKEN: "wait",
}


def test_the_table_and_the_expectation_name_the_same_codes():
    assert set(ERRCODES) == set(EXPECTED_KIND)


@pytest.mark.parametrize("code", sorted(EXPECTED_KIND))
def test_every_errcode_in_the_table_is_classified_as_documented(sandbox, code):
    client = WeChatClient(sandbox.url, timeout=1)
    if code != 0:
        sandbox.inject(code)
    token = client.stable_token(APPID, SECRET).payload["access_token"]
    body = {"touser": "o1", "template_id": "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc",
            "data": {"thing2": {"value": "a"}, "amount3": {"value": "1元"},
                     "thing11": {"value": "b"}, "thing5": {"value": "c"}}}
    ans = client.send(token, body)
    assert ans.errcode == code
    assert ans.kind is EXPECTED_KIND[code]
    if code:
        assert str(code) in ans.reason  # the errcode a person can look up
    else:
        assert ans.msgid and int(ans.msgid) > 2**53
    client.close()


@pytest.mark.parametrize("code", sorted(EXPECTED_KIND))
def test_every_errcode_leads_to_its_action(tmp_path, code):
    r = retry_cfg(tmp_path, max_attempts=5)
    o = decide(row_id=1, attempts=1, answer=answer(EXPECTED_KIND[code], code), now=T0,
               retry=r)
    assert o.status == EXPECTED_ACTION[EXPECTED_KIND[code]]
    # quota and credential trouble is not the row's fault: the attempt is refunded
    refunded = EXPECTED_KIND[code] in (Kind.QUOTA_DAY, Kind.QUOTA_MINUTE, Kind.CREDENTIAL)
    assert o.refund_attempt is refunded


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS)
def test_transport_faults_are_transient(sandbox, fault):
    client = WeChatClient(sandbox.url, timeout=0.5)
    sandbox.inject(fault)
    ans = client.send("whatever", {"touser": "o"})
    assert ans.kind is Kind.TRANSIENT and ans.errcode is None
    assert ans.timed_out is (fault == "timeout")
    assert "whatever" not in ans.reason  # the token never reaches an error text
    client.close()


def test_unknown_errcode_is_permanent():
    assert meaning(99999).kind is Kind.PERMANENT


def test_token_endpoint_40001_means_bad_credentials_not_stale_token(sandbox):
    client = WeChatClient(sandbox.url, timeout=1)
    ans = client.stable_token(APPID, "not-the-secret")
    assert ans.kind is Kind.CREDENTIAL and ans.errcode == 40125
    assert "not-the-secret" not in ans.reason
    client.close()


# -- decide(): the action for each kind ---------------------------------------------
def answer(kind: Kind, code: int | None, reason: str = "why") -> Answer:
    return Answer(kind, code, reason, msgid="123" if kind is Kind.SUCCESS else None)


def test_backoff_schedule_is_exponential_and_capped(tmp_path):
    r = retry_cfg(tmp_path, backoff={"base": "30s", "factor": 2, "max": "5m", "jitter": 0})
    assert [backoff_delay(n, r) for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]


def test_backoff_jitter_stays_within_bounds(tmp_path):
    r = retry_cfg(tmp_path, backoff={"base": "100s", "factor": 1, "max": "1h", "jitter": 0.2})
    rng = random.Random(7)
    delays = [backoff_delay(1, r, rng) for _ in range(500)]
    assert min(delays) >= 80 and max(delays) <= 120
    assert max(delays) - min(delays) > 30  # it does spread


def test_transient_goes_back_to_wait_with_backoff_then_gives_up(tmp_path):
    r = retry_cfg(tmp_path, max_attempts=3, backoff={"base": "30s", "factor": 2, "jitter": 0})
    o = decide(row_id=1, attempts=1, answer=answer(Kind.TRANSIENT, -1, "-1 busy"), now=T0,
               retry=r)
    assert (o.status, o.send_at, o.errcode) == ("wait", T0 + timedelta(seconds=30), -1)
    o = decide(row_id=1, attempts=2, answer=answer(Kind.TRANSIENT, -1, "-1 busy"), now=T0,
               retry=r)
    assert o.send_at == T0 + timedelta(seconds=60)
    o = decide(row_id=1, attempts=3, answer=answer(Kind.TRANSIENT, -1, "-1 busy"), now=T0,
               retry=r)
    assert o.status == "fail" and o.error == "gave up after 3 attempts: -1 busy"


def test_quota_and_user_busy_actions(tmp_path):
    r = retry_cfg(tmp_path, daily_quota_reset="00:00+08:00")
    now = datetime(2026, 11, 28, 3, 15, 42, tzinfo=UTC)
    day = decide(row_id=1, attempts=2, answer=answer(Kind.QUOTA_DAY, 45009), now=now, retry=r)
    assert day.status == "wait" and day.refund_attempt
    assert day.send_at == datetime(2026, 11, 28, 16, 0, tzinfo=UTC)  # midnight in Beijing
    minute = decide(row_id=1, attempts=2, answer=answer(Kind.QUOTA_MINUTE, 45011), now=now,
                    retry=r)
    assert minute.send_at == datetime(2026, 11, 28, 3, 16, tzinfo=UTC) and minute.refund_attempt
    busy = decide(row_id=1, attempts=2, answer=answer(Kind.USER_BUSY, 43108), now=now, retry=r)
    assert busy.status == "wait" and not busy.refund_attempt
    assert timedelta(0) < busy.send_at - now <= timedelta(seconds=10)


@pytest.mark.parametrize("code", [c for c, k in EXPECTED_KIND.items() if k is Kind.PERMANENT])
def test_permanent_codes_fail_at_once(tmp_path, code):
    r = retry_cfg(tmp_path)
    o = decide(row_id=1, attempts=1, answer=answer(meaning(code).kind, code), now=T0, retry=r)
    assert o.status == "fail" and o.errcode == code


# -- end to end through the sandbox ----------------------------------------------------
def test_max_attempts_end_to_end(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, retry={"max_attempts": 3})
    rid = insert_sql(db, template="order_status", openid="oX", params=GOOD)
    sandbox.inject(-1, times=3)
    t = clock.now()
    for i in range(3):
        dispatch.run(rt, now=at(t + timedelta(hours=i)))
        r = row(rid)
        assert r.attempts == i + 1
    assert r.status == "fail"
    assert r.error.startswith("gave up after 3 attempts: -1 WeChat system busy")
    assert sandbox.accepted == []


def test_a_backed_off_row_waits_until_its_send_at(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, retry={"backoff": {"base": "30s", "jitter": 0}})
    rid = insert_sql(db, template="order_status", openid="oX", params=GOOD)
    sandbox.inject("http_502")
    t = clock.now()
    dispatch.run(rt, now=at(t))
    assert row(rid).status == "wait" and row(rid).error.startswith("will retry: WeChat answered")
    dispatch.run(rt, now=at(t + timedelta(seconds=29)))
    assert row(rid).attempts == 1  # not yet
    dispatch.run(rt, now=at(t + timedelta(seconds=31)))
    assert row(rid).status == "success" and row(rid).attempts == 2


def test_daily_quota_defers_the_app_without_burning_attempts(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(5)]
    sandbox.inject(45009)
    dispatch.run(rt)
    rows = [row(i) for i in ids]
    assert all(r.status == "wait" and r.attempts == 0 for r in rows)
    assert len({r.send_at for r in rows}) == 1 and rows[0].send_at > clock.now()
    assert len(sandbox.attempts) == 1  # the other four were held, not sent into the quota


def test_token_expiry_mid_run_costs_exactly_one_refresh(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(20)]
    sandbox.expire_tokens_after(5)
    dispatch.run(rt)
    assert all(row(i).status == "success" and row(i).attempts == 1 for i in ids)
    assert sandbox.token_calls["stable"] == 2
    assert sum(1 for a in sandbox.attempts if a.errcode == 42001) == 1


def test_token_error_twice_does_not_loop(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    sandbox.inject(40001, times=2)
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "wait" and r.errcode == 40001 and r.attempts == 1
    assert sandbox.token_calls["stable"] == 2  # one refresh, one resend, then back off


def test_transient_fault_on_one_row_does_not_delay_the_others(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, http={"timeout": "1.5s"}, dispatch={"workers": 4})
    slow = insert_sql(db, template="order_status", openid="oSlow", params=GOOD)
    others = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
              for i in range(12)]
    sandbox.inject("timeout", openid="oSlow")
    t0 = time.monotonic()
    dispatch.run(rt)
    accepted_at = [a.at - t0 for a in sandbox.attempts if a.errcode == 0]
    # all done while oSlow still hung (it gives up at the 1.5 s timeout)
    assert len(accepted_at) == 12 and max(accepted_at) < 1.4
    assert all(row(i).status == "success" for i in others)
    r = row(slow)
    assert r.status == "wait" and r.attempts == 1 and "timed out" in r.error


@pytest.mark.parametrize("on_stale", ["retry", "fail"])
def test_rate_limit_holds_over_a_backlog(db, sandbox, runtime_factory, on_stale):
    """At most `rate` requests start in any one-second window, the first included, when
    16 workers want to go (on_stale: fail writes started_at before each send, which
    once let 37 requests into one second at a limit of 25)."""
    rate, n = 25, 100
    rt = runtime_factory(db, sandbox, dispatch={"rate_limit": rate, "workers": 16,
                                                "on_stale": on_stale})
    started: dict[str, float] = {}  # openid -> the moment its request really started
    sender = rt.senders["subscribe"]
    real = sender.send

    def timed(built, token):  # on its thread
        started[built.recipient] = time.monotonic()
        return real(built, token)

    sender.send = timed
    for i in range(n):
        insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
    dispatch.run(rt)
    starts = list(started.values())
    assert len(starts) == n and len(sandbox.attempts) == n

    def worst(times: list[float], window: float) -> int:
        times = sorted(times)
        return max(sum(1 for u in times if t <= u < t + window) for t in times)

    assert worst(starts, 1.0) <= rate
    span = max(starts) - min(starts)
    assert span >= (n - rate) / rate  # three more windows after the first burst
    # at the sandbox each request arrives up to `lag` after it started (loopback and
    # thread scheduling; well over 100 ms when the machine is busy), so any window
    # 1 s - lag long at the sandbox lies inside a 1 s window of starts
    lag = max(a.at - started[a.touser] for a in sandbox.attempts)
    assert 0 <= lag < 0.5
    assert worst([a.at for a in sandbox.attempts], 1.0 - lag) <= rate


def test_legacy_token_source(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, apps={"default": {"appid": APPID, "secret": SECRET,
                                                        "token_source": "legacy"}})
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    dispatch.run(rt)
    assert row(rid).status == "success"
    assert sandbox.token_calls == {"stable": 0, "legacy": 1}


def test_external_token_source_reads_and_never_fetches(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, apps={"default": {"appid": APPID,
                                                        "token_source": "external"}})
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "wait" and r.attempts == 0 and "external token source" in r.error
    # the other service writes a token it got from WeChat
    client = WeChatClient(sandbox.url, timeout=2)
    ans = client.stable_token(APPID, SECRET)
    AccessToken.insert(app="default", token=ans.payload["access_token"],
                       expires_at=clock.now() + timedelta(hours=2)).execute()
    dispatch.run(rt, now=at(clock.now() + timedelta(minutes=2)))
    assert row(rid).status == "success"
    assert rt.tokens.fetches == 0 and sandbox.token_calls["stable"] == 1  # only the other's
    client.close()


def test_credential_error_leaves_rows_waiting_with_the_reason(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, apps={"default": {"appid": "wxnobody", "secret": "x1234"}})
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    dispatch.run(rt)
    r = row(rid)
    assert (r.status, r.attempts) == ("wait", 0)
    assert "40013" in r.error and "x1234" not in r.error


# -- leases, stale rows and ownership -----------------------------------------------------
@pytest.mark.parametrize(("on_stale", "started", "status", "attempts"), [
    ("retry", False, "wait", 1),
    ("fail", True, "fail", 1),  # its send may have reached WeChat: at-most-once
    ("fail", False, "wait", 0),  # it never reached a send: back, the attempt refunded
])
def test_stale_rows_are_recovered(db, sandbox, runtime_factory, on_stale, started, status,
                                  attempts):
    rt = runtime_factory(db, sandbox, dispatch={"on_stale": on_stale, "lease": "1m"})
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    t = clock.now()
    claim_batch(db, daemon_id="dead-daemon", now=t, lease=60, limit=10)
    if started:
        assert mark_started(db, rid, 1, daemon_id="dead-daemon", now=t)
    assert stale_retry.run(rt, now=at(t + timedelta(seconds=59))) == 0
    assert stale_retry.run(rt, now=at(t + timedelta(seconds=61))) == 1
    r = row(rid)
    assert (r.status, r.attempts) == (status, attempts)
    assert "lease expired" in r.error
    assert r.lease_until is None


def test_stale_row_with_attempts_spent_fails(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, retry={"max_attempts": 2})
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD, attempts=1)
    t = clock.now()
    claim_batch(db, daemon_id="dead", now=t, lease=10, limit=1)
    stale_retry.run(rt, now=at(t + timedelta(seconds=11)))
    assert row(rid).status == "fail"
    assert row(rid).error.startswith("gave up after 2 attempts: lease expired")


def test_a_slow_daemon_cannot_overwrite_its_successors_result(db):
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    t = clock.now()
    [mine] = claim_batch(db, daemon_id="slow", now=t, lease=10, limit=1)
    # lease runs out, another daemon recovers and sends it
    MsgList.update(status="wait", claimed_by=None).where(MsgList.id == rid).execute()
    [theirs] = claim_batch(db, daemon_id="fast", now=t + timedelta(seconds=11), lease=10, limit=1)
    assert record(db, [Outcome(rid, theirs.attempts, "success", 0, None, "42")],
                  daemon_id="fast", now=t) == 1
    # the slow one finally answers: nothing written
    assert record(db, [Outcome(rid, mine.attempts, "fail", -1, "late")],
                  daemon_id="slow", now=t) == 0
    assert (row(rid).status, row(rid).msgid) == ("success", "42")
    # even the same daemon id with a stale claim (attempts differ) is refused
    MsgList.update(status="sending", claimed_by="fast").where(MsgList.id == rid).execute()
    assert record(db, [Outcome(rid, mine.attempts, "fail", -1, "late")],
                  daemon_id="fast", now=t) == 0


# -- the database going away ---------------------------------------------------------------
def test_locked_database_fails_the_run_and_the_next_run_carries_on(tmp_path, sandbox):
    from db.connection import init_schema
    from db.drivers import HeraldSqlite
    from runtime import Runtime
    from tests.bound import bind

    path = tmp_path / "herald.db"
    # Herald's SQLite class (it puts timestamps in SQLite's form), with a short lock wait
    db = bind(HeraldSqlite(str(path), pragmas={"journal_mode": "wal", "busy_timeout": 200},
                           timeout=0.2))
    init_schema(db)
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    rt = Runtime.build(make_config(f"sqlite:///{path}", sandbox.url, tmp_path), db)
    other = sqlite3.connect(path, timeout=0.1)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(peewee.OperationalError, match="locked"):
        dispatch.run(rt)
    assert row(rid).status == "wait"
    other.rollback()
    other.close()
    assert dispatch.run(rt).sent == 1
    rt.close()


def test_daemon_survives_a_failing_job_run(db, sandbox, runtime_factory, caplog):
    from service.daemon import Daemon

    rt = runtime_factory(db, sandbox, jobs={"dispatch": {"every": "1s"}})
    calls = []
    daemon = Daemon(rt)
    real = daemon.scheduler.get_job("dispatch").func

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return real()

    daemon.scheduler.modify_job("dispatch", func=flaky)
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    daemon.start()
    jobs = {j.id: j.next_run_time for j in daemon.scheduler.get_jobs()}
    assert set(jobs) >= {"dispatch", "token_refresh", "stale_retry"}
    assert all(jobs.values()), jobs  # none added paused
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and row(rid).status != "success":
        time.sleep(0.1)
    daemon.stop()
    assert row(rid).status == "success" and len(calls) >= 2
    assert "job dispatch failed" in caplog.text


# -- hostile rows ----------------------------------------------------------------------------
def test_null_template_or_openid_is_refused_by_the_database(db):
    for cols in ({"openid": "o"}, {"template": "order_status"},
                 {"template": None, "openid": "o"}, {"template": "t", "openid": None}):
        with pytest.raises(peewee.IntegrityError):
            insert_sql(db, **cols)


def test_hostile_rows_fail_with_reasons(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    huge = insert_sql(db, template="order_status", openid="o1",
                      params=json.dumps(["x" * 70000, 1, "a", "b"]))
    blank = insert_sql(db, template="   ", openid="o2", params=GOOD)
    spaces = insert_sql(db, template="order_status", openid="  ", params=GOOD)
    app = insert_sql(db, template="order_status", openid="o3", params=GOOD, app="shop")
    dispatch.run(rt)
    assert "over the 64 KiB limit" in row(huge).error
    assert row(blank).error == "template is empty"
    assert row(spaces).error == "openid is empty"
    assert row(app).error == "unknown app 'shop' (configured: default)"
    assert all(row(i).status == "fail" for i in (huge, blank, spaces, app))


def test_second_insert_with_a_dedup_key_is_rejected(db):
    insert_sql(db, template="order_status", openid="o", dedup_key="order-42-shipped")
    with pytest.raises(peewee.IntegrityError):
        insert_sql(db, template="order_status", openid="o", dedup_key="order-42-shipped")
    insert_sql(db, template="order_status", openid="o")  # NULL keys never collide
    insert_sql(db, template="order_status", openid="o")


def test_claims_stay_small_enough_under_a_slow_rate_limit():
    from jobs.dispatch import claim_limit

    assert claim_limit(100, None, 300) == 100
    assert claim_limit(100, 50, 300) == 100
    assert claim_limit(100, 0.2, 300) == 15  # 15 rows take 75 s at 0.2/s: a quarter lease
    assert claim_limit(100, 0.001, 60) == 1
