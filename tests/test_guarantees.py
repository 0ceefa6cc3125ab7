"""The send loop's guarantees, each with a test that fails without the line that keeps
it (jobs/dispatch.py's lease check before a send, the drop of rows whose lease is
gone, the per-row safety net of preparation; db/outcomes.py's grant decrement by the
number of sends in one write)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import clock
from channels.base import Answer, Kind
from db.claim import claim_batch
from db.models import MsgList, SubscribeGrant
from db.outcomes import GrantUse, Outcome, record
from jobs import dispatch
from tests.conftest import insert_sql, row
from tests.support import wait_for

GOOD = '["Tea", 3, "shipped", "ok"]'


class Gate:
    """Wraps a channel's send: the send to `openid` waits at the gate (on its pool
    thread, before the request) until open() is called; every send is recorded."""

    def __init__(self, rt: Any, openid: str) -> None:
        self.sender = rt.senders["subscribe"]
        self.real = self.sender.send
        self.openid = openid
        self.opened = threading.Event()
        self.waiting = threading.Event()
        self.sent: list[str] = []
        self.sender.send = self._send

    def _send(self, built: Any, token: str | None) -> Answer:
        if built.recipient == self.openid:
            self.waiting.set()
            self.opened.wait(60)
        self.sent.append(built.recipient)
        return self.real(built, token)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def background() -> Iterator[Any]:
    """dispatch.run on a thread; stopped (rt.stopping) if a test leaves it running."""
    started: list[tuple[Any, threading.Thread]] = []
    results: dict[int, Any] = {}

    def run(rt: Any) -> threading.Thread:
        t = threading.Thread(target=lambda: results.__setitem__(id(rt), dispatch.run(rt)),
                             daemon=True)
        t.start()
        started.append((rt, t))
        return t

    run.results = results  # type: ignore[attr-defined]
    yield run
    for rt, t in started:
        if t.is_alive():
            rt.stopping.set()
            t.join(30)


def _lease_of(rid: int) -> object:
    return MsgList.get_by_id(rid).lease_until


def test_a_send_whose_lease_is_too_short_does_not_start(db, sandbox, runtime_factory):
    """The lease is looked at again when the send is about to start (it may have waited
    in the pool and the rate limit meanwhile): less than http.timeout + margin left,
    and it does not go."""
    rt = runtime_factory(db, sandbox)
    insert_sql(db, template="order_status", openid="o1", params=GOOD)
    [claimed] = claim_batch(db, daemon_id=rt.daemon_id, now=clock.now(), lease=60, limit=1)
    st = dispatch._State()
    job = dispatch._prepare(rt, st, claimed, clock.now())
    assert job is not None
    job.token = rt.tokens.get("default", clock.now())  # as _submit does
    job.lease_until = clock.now() + timedelta(seconds=rt.config.http.timeout + 1)
    with pytest.raises(dispatch.NotSent, match="lease too short"):
        dispatch._send(rt, job, {}, {})
    assert sandbox.received == []
    job.lease_until = clock.now() + timedelta(seconds=60)
    assert dispatch._send(rt, job, {}, {}).kind is Kind.SUCCESS  # the same job, ok


def test_rows_taken_over_while_they_wait_are_never_sent(db, sandbox, runtime_factory,
                                                        background):
    """Our lease ran out while the rows waited (the database was away) and another
    daemon took them: at the next renewal the ones waiting in memory are dropped, and
    the one already queued in the pool does not go when its turn comes."""
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1, "lease": "10s"})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(6)]
    gate = Gate(rt, "o0")  # the first send holds the only worker; o1 queues behind it
    run = background(rt)
    assert gate.waiting.wait(10)
    first_lease = _lease_of(ids[0])
    # another daemon takes the other five (as stale_retry and a claim would)
    db.execute_sql("UPDATE msg_list SET claimed_by = 'thief', attempts = attempts + 1 "
                   "WHERE id != ?", (ids[0],))
    # the loop renews its leases when the soonest is within 6 s of running out
    assert wait_for(lambda: _lease_of(ids[0]) != first_lease, 15)
    gate.open()
    run.join(20)
    assert not run.is_alive()
    assert gate.sent == ["o0"] and [r["touser"] for r in sandbox.received] == ["o0"]
    stats = background.results[id(rt)]
    assert stats.dropped == 5 and stats.sent == 1
    assert all(row(i).claimed_by == "thief" for i in ids[1:])


def test_rows_whose_lease_runs_out_while_renewal_fails_are_dropped(
        db, sandbox, runtime_factory, background, monkeypatch):
    """The database refuses every renewal: rows whose lease has passed are left to
    stale_retry (never sent, never held forever), and the run ends."""
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1, "lease": "10s"})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(4)]

    def refused(*_a: Any, **_k: Any) -> set[int]:
        raise RuntimeError("database is away")

    monkeypatch.setattr(dispatch, "renew_leases", refused)
    gate = Gate(rt, "o0")
    run = background(rt)
    assert gate.waiting.wait(10)
    leases = {i: row(i).lease_until for i in ids}
    assert wait_for(lambda: clock.now() > max(leases.values()) + timedelta(seconds=0.3), 15)
    gate.open()
    run.join(15)
    assert not run.is_alive(), "the run kept rows whose lease was gone"
    stats = background.results[id(rt)]
    assert stats.dropped == 3 and gate.sent == ["o0"]
    assert all(row(i).status == "sending" for i in ids[1:])  # for stale_retry


def test_a_row_whose_preparation_raises_fails_alone(db, sandbox, runtime_factory,
                                                    monkeypatch):
    rt = runtime_factory(db, sandbox)
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(3)]
    real = dispatch._render

    def render(rt_: Any, r: Any) -> Any:
        if r.openid == "o1":
            raise KeyError("a bug that only this row's values reach")
        return real(rt_, r)

    monkeypatch.setattr(dispatch, "_render", render)
    stats = dispatch.run(rt)
    assert stats.sent == 2 and stats.failed == 1
    bad = row(ids[1])
    assert bad.status == "fail" and bad.error.startswith("internal error preparing the row: "
                                                         "KeyError")
    assert {r["touser"] for r in sandbox.received} == {"o0", "o2"}


def test_the_grant_balance_goes_down_by_the_sends_of_one_write(any_db):
    """Three sends to one user and template in one write use three grants."""
    ids = [insert_sql(any_db, template="order_status", openid="oU") for _ in range(4)]
    t = clock.now() + timedelta(seconds=1)  # after the server's defaults
    claimed = {r.id: r for r in claim_batch(any_db, daemon_id="me", now=t, lease=60,
                                            limit=4)}
    for openid, balance in (("oU", 5), ("oV", 1), ("oW", None)):
        SubscribeGrant.insert(app="default", openid=openid, template_id="T1",
                              balance=balance, updated_at=t).execute()
    uses = [GrantUse("default", "oU", "T1", used=True)] * 3 + [
        GrantUse("default", "oV", "T1", used=True)]
    outcomes = [Outcome(rid, claimed[rid].attempts, "success", 0, None, f"{n + 1}", grant=g)
                for n, (rid, g) in enumerate(zip(ids, uses, strict=True))]
    assert record(any_db, outcomes, daemon_id="me", now=t) == 4
    balances = {g.openid: g.balance for g in SubscribeGrant.select()}
    assert balances == {"oU": 2, "oV": 0, "oW": None}


def test_each_failed_row_is_logged_once_with_its_template_quoted_one_way(
        db, sandbox, runtime_factory, caplog):
    """One WARNING line per failed row, whatever failed it (its values, its app, a
    row nobody can read, WeChat's answer), the template named the same way in each."""
    import logging

    rt = runtime_factory(db, sandbox)
    failing = {
        "render": insert_sql(db, template="order_status", openid="o1", params="{not json"),
        "app": insert_sql(db, template="order_status", openid="o2", params=GOOD, app="nope"),
        "unreadable": insert_sql(db, template="order_status", openid="o3", params=GOOD),
        "answer": insert_sql(db, template="order_status", openid="o4", params=GOOD),
        "unknown": insert_sql(db, template="no\nsuch", openid="o5", params=GOOD),
    }
    good = insert_sql(db, template="order_status", openid="o6", params=GOOD)
    db.execute_sql("UPDATE msg_list SET params = X'FF' WHERE id = ?", (failing["unreadable"],))
    sandbox.inject(40003, openid="o4")
    with caplog.at_level(logging.INFO, logger="herald"):
        stats = dispatch.run(rt)
    assert stats.failed == len(failing) and row(good).status == "success"
    for why, rid in failing.items():
        status = db.execute_sql("SELECT status FROM msg_list WHERE id = ?", (rid,)).fetchone()
        assert status == ("fail",), why
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                 and r.getMessage().startswith(f"row {rid} ")]
        assert len(lines) == 1, (why, lines)
        template = "'no\\nsuch'" if why == "unknown" else "'order_status'"
        assert f"row {rid} (template {template}) failed" in lines[0], (why, lines[0])


def test_a_send_queued_with_a_stale_token_skips_it_even_after_the_loop_took_the_answer(
        db, sandbox, runtime_factory, monkeypatch):
    """The send queued behind a 42001 must not go out with the dead token, even when
    the loop takes in the 42001 (and lets later sends use the token again, should
    tokens.get hand it out once more) before the queued send's thread looks: that
    order once sent the dead token a second time (about 1 run in 40)."""
    import math

    rt = runtime_factory(db, sandbox, dispatch={"workers": 1})  # one more queued
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(4)]
    rt.tokens.get("default", clock.now())
    sandbox.expire_tokens()  # the first send answers 42001
    real = dispatch._send

    def late(rt_: Any, job: Any, holds: Any, stale: dict[str, float]) -> Answer:
        if job.token in stale:  # queued with the dead token: let the loop go first
            assert wait_for(lambda: stale.get(job.token) != math.inf, 10)
        return real(rt_, job, holds, stale)

    monkeypatch.setattr(dispatch, "_send", late)
    dispatch.run(rt)
    assert all(row(i).status == "success" and row(i).attempts == 1 for i in ids)
    assert sum(1 for a in sandbox.attempts if a.errcode == 42001) == 1
