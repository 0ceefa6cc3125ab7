"""Sends queued in the pool beyond its workers (jobs/dispatch.py QUEUE_AHEAD) wait a
moment before they start; what happened meanwhile must still stop them: a quota the
sends ahead of them spent, a stop, a token that went stale."""

from __future__ import annotations

import threading

import clock
from db.models import MsgEvent, MsgList
from jobs import dispatch
from tests.conftest import insert_sql, row
from tests.support import wait_for

GOOD = '["Tea", 3, "shipped", "ok"]'


def _run_in_thread(rt) -> threading.Thread:
    t = threading.Thread(target=dispatch.run, args=(rt,), daemon=True)
    t.start()
    return t


def test_sends_queued_behind_a_spent_daily_quota_never_reach_wechat(db, sandbox,
                                                                   runtime_factory):
    workers = 8  # QUEUE_AHEAD 0.25: two more wait queued in the pool
    rt = runtime_factory(db, sandbox, dispatch={"workers": workers})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(10)]
    sandbox.latency = 0.2  # all eight are on the wire before the first answer
    sandbox.inject(45009, times=100)
    dispatch.run(rt)
    # the eight already sent could not be helped; the two queued saw the quota was gone
    assert len(sandbox.attempts) == workers
    rows = [row(i) for i in ids]
    assert all(r.status == "wait" and r.attempts == 0 for r in rows)
    assert all(r.send_at > clock.now() for r in rows)


def test_a_stop_hands_back_a_send_still_queued(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, dispatch={"workers": 2})  # one more queued
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(3)]
    for i in range(3):
        sandbox.hold(f"o{i}")  # the sandbox keeps the two sent requests open
    run = _run_in_thread(rt)
    try:
        assert wait_for(lambda: len(sandbox.received) == 2)
        rt.stopping.set()  # SIGTERM: the third, queued behind them, must not start
    finally:
        sandbox.release()
    run.join(30)
    assert not run.is_alive()
    assert len(sandbox.received) == 2
    rows = {i: row(i) for i in ids}
    sent = [i for i in ids if rows[i].status == "success"]
    unsent = [i for i in ids if rows[i].status != "success"]
    assert len(sent) == 2 and len(unsent) == 1
    back = rows[unsent[0]]
    assert back.status == "wait" and back.attempts == 0 and back.lease_until is None
    kinds = [e.kind for e in MsgEvent.select().where(MsgEvent.msg_id == unsent[0])]
    assert "handback" in kinds and "attempt" not in kinds


def test_a_send_queued_with_a_token_that_went_stale_waits_for_the_fresh_one(
        db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1})  # one more queued
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(4)]
    rt.tokens.get("default", clock.now())  # fetched before the run ...
    sandbox.expire_tokens()  # ... and expired, so the first send answers 42001
    dispatch.run(rt)
    assert all(row(i).status == "success" and row(i).attempts == 1 for i in ids)
    # the send queued behind the first did not go out with the dead token
    assert sum(1 for a in sandbox.attempts if a.errcode == 42001) == 1
    assert sandbox.token_calls["stable"] == 2


def test_a_token_refused_once_but_handed_out_again_is_used_not_skipped_forever(
        db, sandbox, runtime_factory):
    """A 40001 while the token is in fact fine: stable_token hands out the same token
    again. The queued sends must then send with it, not skip it for good."""
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(4)]
    sandbox.inject(40001, times=1)
    run = _run_in_thread(rt)
    run.join(30)
    if run.is_alive():  # a livelock: stop it so the test fails instead of hanging
        rt.stopping.set()
        run.join(30)
        raise AssertionError("dispatch kept skipping a token it was handed again")
    assert all(row(i).status == "success" for i in ids)
    assert sum(1 for a in sandbox.attempts if a.errcode == 40001) == 1
    assert MsgList.select().where(MsgList.status == "success").count() == 4
