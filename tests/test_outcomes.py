"""Result writes on every dialect: each shape of outcome, in groups, with ownership."""

from __future__ import annotations

from datetime import timedelta

import clock
from db.claim import claim_batch
from db.models import MsgList
from db.outcomes import Outcome, record
from tests.conftest import insert_sql


def test_grouped_outcomes_of_every_shape(any_db):
    ids = [insert_sql(any_db, template="order_status", openid=f"o{i}") for i in range(12)]
    t = clock.now().replace(microsecond=0) + timedelta(seconds=1)  # after the defaults
    claimed = {r.id: r for r in claim_batch(any_db, daemon_id="me", now=t, lease=60, limit=12)}
    assert set(claimed) == set(ids)
    later = t + timedelta(minutes=5)
    msgid = "1988810812324364291"
    outcomes = []
    for n, rid in enumerate(ids):
        a = claimed[rid].attempts
        kind = n % 4
        if kind == 0:
            outcomes.append(Outcome(rid, a, "success", 0, None, msgid))
        elif kind == 1:
            outcomes.append(Outcome(rid, a, "fail", 43101, "43101 refused", None))
        elif kind == 2:
            outcomes.append(Outcome(rid, a, "wait", -1, "will retry: busy", send_at=later))
        else:
            outcomes.append(Outcome(rid, a, "wait", 45009, "deferred", send_at=later,
                                    refund_attempt=True))
    # two rows another daemon owns now, and one stale claim of ours: none may be written
    foreign = Outcome(ids[0], claimed[ids[0]].attempts, "fail", -1, "late")
    stale = Outcome(ids[1], claimed[ids[1]].attempts + 1, "success", 0, None, "1")
    written = record(any_db, outcomes, daemon_id="me", now=t)
    assert written == 12
    assert record(any_db, [foreign, stale], daemon_id="me", now=t) == 0
    assert record(any_db, [Outcome(ids[4], 1, "fail", -1, "x")], daemon_id="other",
                  now=t) == 0
    rows = {r.id: r for r in MsgList.select().where(MsgList.id.in_(ids))}
    for n, rid in enumerate(ids):
        r = rows[rid]
        assert r.lease_until is None and r.updated_at == t
        kind = n % 4
        if kind == 0:
            assert (r.status, r.errcode, r.msgid, r.sent_at, r.attempts) == (
                "success", 0, msgid, t, 1)
            assert r.claimed_by == "me"
        elif kind == 1:
            assert (r.status, r.errcode, r.error) == ("fail", 43101, "43101 refused")
        elif kind == 2:
            assert (r.status, r.send_at, r.attempts, r.claimed_by) == ("wait", later, 1, None)
            assert r.error == "will retry: busy"
        else:
            assert (r.status, r.send_at, r.attempts, r.errcode) == ("wait", later, 0, 45009)


def test_a_single_outcome_and_long_errors(any_db):
    rid = insert_sql(any_db, template="order_status", openid="o")
    t = clock.now()
    [r] = claim_batch(any_db, daemon_id="me", now=t, lease=60, limit=1)
    assert record(any_db, [Outcome(rid, r.attempts, "fail", None, "x" * 5000)],
                  daemon_id="me", now=t) == 1
    assert len(MsgList.get_by_id(rid).error) == 1000


def test_a_row_cancelled_during_its_send_keeps_the_truth(any_db):
    """The application cancelled the row while WeChat was accepting it: it stays
    cancelled, but keeps the msgid and sent_at of the delivery, and says so."""
    sent, failed, retried = (insert_sql(any_db, template="order_status", openid=f"c{i}")
                             for i in range(3))
    t = clock.now().replace(microsecond=0) + timedelta(seconds=1)
    claimed = {r.id: r.attempts for r in claim_batch(any_db, daemon_id="me", now=t, lease=60,
                                                     limit=3)}
    with any_db.connection_context():
        MsgList.update(status="cancelled").where(MsgList.id.in_(list(claimed))).execute()
    outcomes = [Outcome(sent, claimed[sent], "success", 0, None, "1988810812324364999"),
                Outcome(failed, claimed[failed], "fail", 43101, "43101 refused"),
                Outcome(retried, claimed[retried], "wait", -1, "will retry: busy",
                        send_at=t + timedelta(minutes=1))]
    assert record(any_db, outcomes, daemon_id="me", now=t) == 3
    with any_db.connection_context():
        a, b, c = (MsgList.get_by_id(i) for i in (sent, failed, retried))
    assert (a.status, a.msgid, a.errcode) == ("cancelled", "1988810812324364999", 0)
    assert a.sent_at == t and "too late" in a.error and "delivered" in a.error
    assert (b.status, b.errcode) == ("cancelled", 43101) and "send failed" in b.error
    assert c.status == "cancelled" and c.send_at != t + timedelta(minutes=1)


def test_one_unstorable_answer_value_does_not_block_its_group(any_db):
    ids = [insert_sql(any_db, template="order_status", openid=f"u{i}") for i in range(4)]
    t = clock.now().replace(microsecond=0) + timedelta(seconds=1)
    claimed = {r.id: r.attempts for r in claim_batch(any_db, daemon_id="me", now=t, lease=60,
                                                     limit=4)}
    huge = "9" * 40  # longer than msg_list.msgid holds
    outcomes = [Outcome(ids[0], claimed[ids[0]], "success", 0, None, huge),
                Outcome(ids[1], claimed[ids[1]], "success", 0, None, "123"),
                Outcome(ids[2], claimed[ids[2]], "fail", 2**40, "odd code"),
                Outcome(ids[3], claimed[ids[3]], "fail", 40003, "x\x00y")]
    assert record(any_db, outcomes, daemon_id="me", now=t) == 4
    with any_db.connection_context():
        rows = {r.id: r for r in MsgList.select().where(MsgList.id.in_(ids))}
    assert (rows[ids[0]].status, rows[ids[0]].msgid) == ("success", None)
    assert "msgid it returned is not storable (40 characters" in rows[ids[0]].error
    assert (rows[ids[1]].status, rows[ids[1]].msgid) == ("success", "123")
    assert rows[ids[2]].errcode is None and "errcode 1099511627776 is outside" in \
        rows[ids[2]].error
    assert rows[ids[3]].error == "x\\0y"  # NUL is not storable on PostgreSQL


def test_an_app_secret_in_an_error_never_reaches_the_column(any_db):
    from logs import add_secret

    add_secret("s3cr3t-app-secret-value")
    rid = insert_sql(any_db, template="order_status", openid="s1")
    t = clock.now().replace(microsecond=0) + timedelta(seconds=1)
    [r] = claim_batch(any_db, daemon_id="me", now=t, lease=60, limit=1)
    record(any_db, [Outcome(rid, r.attempts, "fail", None,
                            "params is not valid JSON: '{\"k\": \"s3cr3t-app-secret-value'")],
           daemon_id="me", now=t)
    with any_db.connection_context():
        error = MsgList.get_by_id(rid).error
    assert "s3cr3t-app-secret-value" not in error and "<redacted>" in error


def test_a_row_handed_back_after_its_start_mark_reads_as_never_started(any_db):
    """on_stale: fail marks a send started before it goes; a stop that comes after the
    mark hands the row back unsent: it must not look started (stale_retry and people
    read started_at)."""
    from db.claim import mark_started

    rid, other = (insert_sql(any_db, template="order_status", openid=f"o{i}")
                  for i in range(2))
    t = clock.now()
    claimed = claim_batch(any_db, daemon_id="me", now=t, lease=60, limit=2)
    for r in claimed:
        assert mark_started(any_db, r.id, r.attempts, daemon_id="me", now=t)
    later = t + timedelta(minutes=1)
    a = {r.id: r.attempts for r in claimed}
    assert record(any_db, [
        Outcome(rid, a[rid], "wait", send_at=later, refund_attempt=True),  # handed back
        Outcome(other, a[other], "wait", -1, "will retry", send_at=later),  # it was sent
    ], daemon_id="me", now=t) == 2
    back, retried = MsgList.get_by_id(rid), MsgList.get_by_id(other)
    assert (back.status, back.attempts, back.started_at) == ("wait", 0, None)
    assert (retried.attempts, retried.started_at) == (1, t)
