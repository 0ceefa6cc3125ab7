"""A row's record never hides what happened, on every dialect: a cancel that comes
while WeChat holds the request, a daemon whose result arrives after its row was
recovered, re-driven and claimed again, answers no column can store.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import clock
from db.claim import claim_batch, mark_started
from db.connection import dialect_of
from db.ops import Selection
from db.ops import retry as ops_retry
from db.outcomes import Outcome, record
from jobs import dispatch, stale_retry
from tests.conftest import insert_sql, row
from tests.support import wait_for

GOOD = '["Tea", 3, "shipped", "ok"]'


def cancel_by_app(db, rid: int) -> None:
    """What an application does: a plain UPDATE, whatever the row is doing."""
    db.execute_sql(f"UPDATE msg_list SET status = 'cancelled' WHERE id = {int(rid)}")


@pytest.mark.parametrize("answer", ["delivered", "refused"])
def test_a_cancel_while_wechat_holds_the_request_keeps_the_truth(any_db, sandbox,
                                                                runtime_factory, answer):
    rt = runtime_factory(any_db, sandbox)
    rid = insert_sql(any_db, template="order_status", openid="oHeld", params=GOOD)
    other = insert_sql(any_db, template="order_status", openid="oOther", params=GOOD)
    sandbox.hold("oHeld")
    if answer == "refused":
        sandbox.inject(43101, openid="oHeld")
    run = threading.Thread(target=dispatch.run, args=(rt,))
    run.start()
    try:
        assert wait_for(lambda: any(m["touser"] == "oHeld" for m in sandbox.received))
        cancel_by_app(any_db, rid)  # WeChat has the request; the cancel comes too late
    finally:
        sandbox.release()
        run.join(timeout=60)
    assert not run.is_alive()
    r = row(rid)
    assert r.status == "cancelled"  # the application's word stands
    assert "cancel came too late" in r.error
    if answer == "delivered":
        [sent] = [m for m in sandbox.accepted if m["touser"] == "oHeld"]
        assert r.msgid == sent["msgid"] and r.sent_at is not None and r.errcode == 0
        assert "delivered" in r.error and sent["msgid"] in r.error
    else:
        assert r.msgid is None and r.sent_at is None and r.errcode == 43101
        assert "the send failed" in r.error and "43101" in r.error
    assert row(other).status == "success"


def test_a_late_writer_cannot_land_after_fail_retry_and_a_new_claim(any_db, sandbox,
                                                                  runtime_factory):
    """A claims; its lease runs out; stale_retry (on_stale: fail) fails the row; an
    operator re-drives it (attempts back to 0); B claims it (attempts 1 again, the same
    as A's claim); then A's result arrives. It must not land: the claim's attempts match,
    only claimed_by tells A from B."""
    rt = runtime_factory(any_db, sandbox, dispatch={"on_stale": "fail", "lease": "10s"},
                         http={"timeout": "3s"})
    rid = insert_sql(any_db, template="order_status", openid="oLate", params=GOOD)
    t = clock.now()
    [a] = claim_batch(any_db, daemon_id="daemon-A", now=t, lease=10, limit=1)
    assert mark_started(any_db, rid, a.attempts, daemon_id="daemon-A", now=t)
    assert stale_retry.run(rt, now=lambda: t + timedelta(seconds=11)) == 1
    assert row(rid).status == "fail"
    assert ops_retry(any_db, Selection(ids=(rid,)), now=t + timedelta(seconds=12)).changed \
        == [rid]
    [b] = claim_batch(any_db, daemon_id="daemon-B", now=t + timedelta(seconds=13), lease=10,
                      limit=1)
    assert b.attempts == a.attempts  # the trap: the same count
    late = Outcome(rid, a.attempts, "fail", 43101, "A's late answer")
    assert record(any_db, [late], daemon_id="daemon-A", now=t + timedelta(seconds=14)) == 0
    mid = row(rid)
    assert (mid.status, mid.claimed_by, mid.errcode) == ("sending", "daemon-B", None)
    assert record(any_db, [Outcome(rid, b.attempts, "success", 0, None, "42")],
                  daemon_id="daemon-B", now=t + timedelta(seconds=15)) == 1
    # and A's answer after B's: still nothing
    assert record(any_db, [late], daemon_id="daemon-A", now=t + timedelta(seconds=16)) == 0
    r = row(rid)
    assert (r.status, r.msgid, r.errcode, r.error) == ("success", "42", 0, None)


def test_a_late_writer_cannot_touch_a_row_cancelled_under_the_next_claim(any_db):
    rid = insert_sql(any_db, template="order_status", openid="oLate2", params=GOOD)
    t = clock.now()
    [a] = claim_batch(any_db, daemon_id="daemon-A", now=t, lease=10, limit=1)
    any_db.execute_sql(f"UPDATE msg_list SET status = 'wait', claimed_by = NULL, "
                       f"attempts = 0 WHERE id = {rid}")  # recovered and re-driven
    [b] = claim_batch(any_db, daemon_id="daemon-B", now=t + timedelta(seconds=1), lease=10,
                      limit=1)
    cancel_by_app(any_db, rid)
    late = Outcome(rid, a.attempts, "success", 0, None, "A-msgid")
    assert record(any_db, [late], daemon_id="daemon-A", now=t) == 0
    r = row(rid)
    assert (r.status, r.msgid, r.error) == ("cancelled", None, None)
    assert b.attempts == a.attempts


MSGID_40 = 10**39 + 7  # 40 digits: VARCHAR(32) cannot hold it
ERRCODE_BIG = 2**31 + 5


def test_unstorable_answers_never_block_their_group(any_db, sandbox, runtime_factory):
    rt = runtime_factory(any_db, sandbox, dispatch={"workers": 4})
    ids = {o: insert_sql(any_db, template="order_status", openid=o, params=GOOD)
           for o in ("oLongId", "oBigCode", "oA", "oB", "oC")}
    sandbox.inject({"errcode": 0, "errmsg": "ok", "msgid": MSGID_40}, openid="oLongId")
    sandbox.inject({"errcode": ERRCODE_BIG, "errmsg": "odd"}, openid="oBigCode")
    stats = dispatch.run(rt)
    assert stats.claimed == 5
    for o in ("oA", "oB", "oC"):
        r = row(ids[o])
        assert r.status == "success" and r.msgid and r.msgid.isdigit()
    long_id = row(ids["oLongId"])
    # delivered, and the record says so, with the msgid it could not keep
    assert long_id.status == "success" and long_id.msgid is None
    assert "msgid" in long_id.error and "not storable" in long_id.error
    assert str(MSGID_40)[:30] in long_id.error
    big = row(ids["oBigCode"])
    assert big.status == "fail" and big.errcode is None
    assert str(ERRCODE_BIG) in big.error and "range" in big.error
    assert all(row(i).status != "sending" for i in ids.values())


def test_a_result_no_write_can_store_does_not_hold_up_the_rest(any_db):
    """record(): a value the database refuses even in the bare fallback write (MySQL's
    TIMESTAMP ends in 2038) costs that row only: the rows after it in the group are
    written, and the bad one is left to stale_retry, not retried for ever."""
    ids = [insert_sql(any_db, template="order_status", openid=f"o{i}") for i in range(4)]
    t = clock.now() + timedelta(seconds=1)
    claimed = {r.id: r for r in claim_batch(any_db, daemon_id="me", now=t, lease=60, limit=4)}
    outcomes = [Outcome(i, claimed[i].attempts, "success", 0, None, str(i)) for i in ids]
    far = t.replace(year=2100)
    outcomes[1] = Outcome(ids[1], claimed[ids[1]].attempts, "wait", -1, "busy", send_at=far)
    written = record(any_db, outcomes, daemon_id="me", now=t)
    statuses = [row(i).status for i in ids]
    assert statuses[0] == statuses[2] == statuses[3] == "success"
    if dialect_of(any_db) == "mysql":
        assert written == 3 and statuses[1] == "sending"
    else:
        assert written == 4 and statuses[1] == "wait" and row(ids[1]).send_at == far
