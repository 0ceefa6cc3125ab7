"""What daemons share, on every dialect: the token row lock and lease recovery.

SQLite always; PostgreSQL and MySQL/MariaDB when their URLs are set (.ci/run)."""

from __future__ import annotations

import threading
from datetime import timedelta

import clock
from db.claim import claim_batch
from db.dialects import dialect
from db.models import AccessToken, MsgList
from jobs import stale_retry
from tests.conftest import insert_sql
from tests.hostile_support import claim_statements, explain


def test_one_daemon_refreshes_while_the_other_waits_and_reads_it(any_db, sandbox,
                                                                 runtime_factory):
    sandbox.token_latency = 0.5  # the refresh takes a while: the other must wait for it
    a = runtime_factory(any_db, sandbox)
    b = runtime_factory(any_db, sandbox)
    now = clock.now()
    got: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def refresh(name, rt):
        barrier.wait()
        with any_db.connection_context():
            got[name] = rt.tokens.refresh("default", now, proactive=False)

    threads = [threading.Thread(target=refresh, args=(n, rt)) for n, rt in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert got["a"] == got["b"]
    assert a.tokens.fetches + b.tokens.fetches == 1  # one fetch, the other read it
    assert sandbox.token_calls["stable"] == 1
    row = AccessToken.get_by_id("default")
    assert row.token == got["a"] and row.refreshed_by in (a.daemon_id, b.daemon_id)


def test_compare_and_expire_on_every_dialect(any_db, sandbox, runtime_factory):
    rt = runtime_factory(any_db, sandbox)
    now = clock.now()
    token = rt.tokens.get("default", now)
    assert rt.tokens.expire("default", "an-older-token", now) is False
    assert rt.tokens.expire("default", token, now) is True
    fresh = rt.tokens.get("default", now)
    assert sandbox.token_calls["stable"] == 2 and fresh


def test_stale_rows_recovered_on_every_dialect(any_db, sandbox, runtime_factory):
    rt = runtime_factory(any_db, sandbox, dispatch={"lease": "30s"})
    ids = [insert_sql(any_db, template="order_status", openid=f"o{i}") for i in range(3)]
    t = clock.now()
    claimed = claim_batch(any_db, daemon_id="dead", now=t, lease=30, limit=2)
    assert len(claimed) == 2
    assert stale_retry.run(rt, now=lambda: t + timedelta(seconds=29)) == 0
    assert stale_retry.run(rt, now=lambda: t + timedelta(seconds=31)) == 2
    rows = {r.id: r for r in MsgList.select().where(MsgList.id.in_(ids))}
    assert sorted(r.status for r in rows.values()) == ["wait"] * 3
    recovered = [rows[c.id] for c in claimed]
    assert all(r.claimed_by is None and r.lease_until is None and r.attempts == 1
               and "lease expired" in r.error for r in recovered)
    # and they can be claimed again at once
    again = claim_batch(any_db, daemon_id="alive", now=t + timedelta(seconds=32), lease=30,
                        limit=5)
    assert {r.id for r in again} == set(ids)


def test_sqlite_claim_reads_the_claim_index_in_order(db):
    """No sort of all due rows: the index gives the claim's order (see bench/poll_cost).
    The plan is of the UPDATE claim_batch itself runs, with Dialect.pick_sql inside."""
    for i in range(20):
        insert_sql(db, template="order_status", openid=f"o{i}")
    d = dialect(db)
    statements = claim_statements(db, daemon_id="d", now=clock.now(), lease=60, limit=5)
    claims = [(sql, params) for sql, params in statements if d.pick_sql() in sql]
    assert len(claims) == 1, statements
    sql, params = claims[0]
    assert sql.startswith("UPDATE msg_list") and "RETURNING" in sql
    plan = explain(db, sql, params)
    assert "msg_list_claim" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
