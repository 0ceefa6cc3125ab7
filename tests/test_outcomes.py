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
