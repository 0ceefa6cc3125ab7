"""Quota holds are the app's, shared: a 45009 one daemon sees holds that app's sends on
that channel on every daemon of the database, and in every later run, until the quota
day resets or someone lifts it; a 45011 until the next minute. On each engine."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import clock
from db import holds
from db.models import MsgEvent, MsgList
from jobs import dispatch
from policy import next_minute
from tests.conftest import insert_sql, row
from tests.support import wait_for

GOOD = '["Tea", 3, "shipped", "ok"]'


def run(rt) -> dispatch.Stats:
    """One dispatch run, on a thread: a run that never ends (a hold that keeps sending
    the same rows back in line) fails the test instead of hanging it."""
    import threading

    out: list[dispatch.Stats | BaseException] = []

    def body() -> None:
        try:
            out.append(dispatch.run(rt))
        except BaseException as exc:  # noqa: BLE001 - raised again on the test's thread
            out.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():
        rt.stopping.set()
        t.join(30)
        raise AssertionError("the dispatch run did not end")
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def _rows(db, n: int, prefix: str) -> list[int]:
    return [insert_sql(db, template="order_status", openid=f"{prefix}{i}", params=GOOD)
            for i in range(n)]


def test_a_45009_on_one_daemon_holds_the_app_on_the_other_until_lifted(
        any_db, sandbox, runtime_factory):
    a = runtime_factory(any_db, sandbox, dispatch={"workers": 1})
    b = runtime_factory(any_db, sandbox, dispatch={"workers": 1})
    assert a.daemon_id != b.daemon_id
    first = _rows(any_db, 3, "a")
    sandbox.inject(45009)
    before = clock.now()
    run(a)
    until = a.config.retry.daily_quota_reset.next_after(before)
    assert len(sandbox.received) == 1  # the other two were held, not sent into the quota
    [h] = holds.active(any_db, clock.now())
    assert (h.app, h.channel, h.until, h.set_by) == ("default", "subscribe", until,
                                                     a.daemon_id)
    assert h.reason and h.reason.startswith("deferred to the next quota day")

    later = _rows(any_db, 3, "b")
    stats = run(b)  # another daemon, which never saw the 45009
    assert stats.claimed == 3 and stats.sent == 0
    run(a)  # and a later run of the first
    assert len(sandbox.received) == 1
    for rid in first + later:
        r = row(rid)
        assert (r.status, r.attempts, r.send_at) == ("wait", 0, until), rid
        assert r.error.startswith("deferred to the next quota day")

    lifted = holds.lift(any_db, "default", None, who="cli:op", now=clock.now())
    assert [(x.app, x.channel) for x in lifted.holds] == [("default", "subscribe")]
    assert lifted.released == 6
    assert holds.active(any_db, clock.now()) == []
    [gone] = holds.read(any_db)
    assert gone.lifted_by == "cli:op" and gone.lifted_at is not None
    stats = run(b)
    assert stats.sent == 6 and len(sandbox.accepted) == 6
    assert all(row(i).status == "success" for i in first + later)
    notes = [e.detail for e in MsgEvent.select().where(MsgEvent.msg_id == later[0])]
    assert any("lifted by cli:op" in (n or "") for n in notes)


def test_a_45011_holds_until_the_next_minute_and_then_the_rows_go(any_db, sandbox,
                                                                  runtime_factory):
    a = runtime_factory(any_db, sandbox, dispatch={"workers": 1})
    b = runtime_factory(any_db, sandbox, dispatch={"workers": 1})
    ids = _rows(any_db, 2, "a")
    sandbox.inject(45011)
    before = clock.now()
    run(a)
    [h] = holds.active(any_db, clock.now())
    assert h.until in (next_minute(before), next_minute(clock.now()))
    assert h.reason and h.reason.startswith("deferred to the next minute")
    assert all(row(i).send_at == h.until for i in ids)
    # the hold ends by itself: a short one stands in for the rest of the minute
    holds.lift(any_db, "default", "subscribe", who="test", now=clock.now())
    end = clock.now() + timedelta(seconds=1.5)
    holds.publish(any_db, [holds.New("default", "subscribe", end,
                                     "deferred to the next minute: 45011")],
                  who=a.daemon_id, now=clock.now())
    more = _rows(any_db, 2, "b")
    assert run(b).sent == 0
    assert all(row(i).send_at == end for i in more)
    assert wait_for(lambda: clock.now() > end + timedelta(seconds=0.1), 5)
    assert run(b).sent == 4
    assert len(sandbox.accepted) == 4


def test_a_hold_on_one_channel_does_not_hold_the_apps_other_templates(
        any_db, sandbox, runtime_factory):
    rt = runtime_factory(any_db, sandbox)
    holds.publish(any_db, [holds.New("default", "uniform", clock.now() + timedelta(hours=1),
                                     "deferred to the next quota day: 45009")],
                  who="other-daemon", now=clock.now())
    ids = _rows(any_db, 2, "a")  # subscribe rows
    assert run(rt).sent == 2
    assert all(row(i).status == "success" for i in ids)


def test_a_longer_hold_is_not_shortened_and_a_lifted_one_is_replaced(any_db):
    now = clock.now()
    day, minute = now + timedelta(hours=5), now + timedelta(seconds=40)
    holds.publish(any_db, [holds.New("default", "subscribe", day, "45009")], who="a", now=now)
    holds.publish(any_db, [holds.New("default", "subscribe", minute, "45011")], who="b",
                  now=now)
    [h] = holds.read(any_db)
    assert (h.until, h.reason, h.set_by) == (day, "45009", "a")
    holds.lift(any_db, "default", None, who="cli:op", now=now)
    holds.publish(any_db, [holds.New("default", "subscribe", minute, "45011")], who="b",
                  now=now + timedelta(seconds=1))
    [h] = holds.read(any_db)
    assert (h.until, h.reason, h.set_by, h.lifted_by, h.lifted_at) == (
        minute, "45011", "b", None, None)


def test_a_daemon_that_deferred_rows_after_a_lift_it_did_not_know_of_puts_them_back(
        any_db, sandbox, runtime_factory):
    """The lift releases the rows waiting under the hold; a daemon that had the hold in
    memory and deferred more rows after the lift puts those back itself."""
    rt = runtime_factory(any_db, sandbox)
    until = clock.now() + timedelta(hours=3)
    holds.publish(any_db, [holds.New("default", "subscribe", until,
                                     "deferred to the next quota day: 45009")],
                  who="other", now=clock.now())
    ids = _rows(any_db, 2, "a")
    real_prepare = dispatch._prepare_all
    lifted = []

    def prepare_then_lift(rt_, st, rows, now):  # the lift lands after the hold was read
        if not lifted:
            lifted.append(holds.lift(any_db, "default", None, who="cli:op",
                                     now=clock.now()))
        real_prepare(rt_, st, rows, now)

    dispatch._prepare_all = prepare_then_lift
    try:
        stats = run(rt)
    finally:
        dispatch._prepare_all = real_prepare
    assert lifted and lifted[0].released == 0  # they were claimed: nothing to release
    assert stats.sent == 0  # deferred by the hold this run still knew
    assert all(row(i).status == "wait" and row(i).send_at <= clock.now() for i in ids)
    assert run(rt).sent == 2


@pytest.mark.parametrize("channel", [None, "subscribe"])
def test_lift_releases_only_the_rows_that_hold_deferred(any_db, channel):
    now = clock.now()
    until = now + timedelta(hours=2)
    holds.publish(any_db, [holds.New("default", "subscribe", until, "deferred to the "
                                     "next quota day: 45009")], who="d", now=now)
    ts = until.strftime("%Y-%m-%d %H:%M:%S")
    deferred = insert_sql(any_db, template="order_status", openid="o1", send_at=ts,
                          error="deferred to the next quota day: 45009")
    null_app = insert_sql(any_db, template="order_status", openid="o2", send_at=ts,
                          error="deferred to the next quota day: 45009")
    scheduled = insert_sql(any_db, template="order_status", openid="o3", send_at=ts)
    other_app = insert_sql(any_db, template="order_status", openid="o4", send_at=ts,
                           app="shop", error="deferred to the next quota day: 45009")
    other_template = insert_sql(any_db, template="sms_code", openid="o5", send_at=ts,
                                error="deferred to the next quota day: 45009")
    templates = ["order_status"] if channel else None
    lifted = holds.lift(any_db, "default", channel, who="cli:op", now=now,
                        templates=templates)
    assert lifted.released == (2 if channel else 3)
    due = {i for i in (deferred, null_app, scheduled, other_app, other_template)
           if row(i).send_at <= now + timedelta(seconds=1)}
    assert due == ({deferred, null_app} if channel else {deferred, null_app, other_template})
    assert holds.lift(any_db, "default", None, who="cli:op", now=now).holds == []


def test_a_hold_row_another_program_broke_holds_nothing(db, sandbox, runtime_factory):
    """SQLite keeps whatever is written: a held_until that is no time is skipped, not
    an error that stops dispatch."""
    rt = runtime_factory(db, sandbox)
    db.execute_sql("INSERT INTO quota_hold (app, channel, held_until, set_by) VALUES "
                   "('default', 'subscribe', 'tomorrow', 'x'), ('default', 'uniform', "
                   "X'FF00', 'x')")
    assert holds.read(db) == []
    rid = _rows(db, 1, "a")[0]
    assert run(rt).sent == 1 and row(rid).status == "success"
    assert MsgList.select().count() == 1


def test_the_holds_verb_lists_and_lifts_recording_who(any_db, any_db_url, tmp_path, capsys):
    import getpass
    import json

    from tests.support import write_config
    from tests.verbs_support import herald

    cfg = str(write_config(tmp_path, database=any_db_url))
    now = clock.now()
    until = now + timedelta(hours=4)
    holds.publish(any_db, [
        holds.New("default", "subscribe", until, "deferred to the next quota day: 45009"),
        holds.New("shop", "sms", now + timedelta(seconds=50), "deferred to the next minute"),
    ], who="host:1:abc", now=now)
    deferred = insert_sql(any_db, template="order_status", openid="o1",
                          send_at=until.strftime("%Y-%m-%d %H:%M:%S"),
                          error="deferred to the next quota day: 45009")

    ran = herald(capsys, "holds", "--config", cfg)
    assert ran.code == 0, ran.text
    assert "app default on subscribe: held until " in ran.out and "set by host:1:abc" in ran.out
    assert "app shop on sms" in ran.out
    listed = json.loads(herald(capsys, "holds", "--json", "--config", cfg).out)
    assert [(h["app"], h["channel"], h["active"]) for h in listed] == [
        ("default", "subscribe", True), ("shop", "sms", True)]
    status = json.loads(herald(capsys, "status", "--json", "--config", cfg).out)
    assert [(h["app"], h["channel"]) for h in status["holds"]] == [
        ("default", "subscribe"), ("shop", "sms")]
    assert "quota holds (every daemon holds these sends" in herald(
        capsys, "status", "--config", cfg).out

    assert herald(capsys, "holds", "--channel", "sms", "--config", cfg).code == 2
    assert herald(capsys, "holds", "--lift", "default", "--channel", "nope",
                  "--config", cfg).code == 2
    none = herald(capsys, "holds", "--lift", "default", "--channel", "sms", "--config", cfg)
    assert none.code == 1 and "app default has no quota hold in force on sms" in none.err
    lift = herald(capsys, "holds", "--lift", "default", "--channel", "subscribe",
                  "--config", cfg)
    assert lift.code == 0, lift.text
    assert "lifted the hold of app default on subscribe" in lift.out
    assert "1 waiting rows it had deferred are due now" in lift.out
    assert row(deferred).send_at <= clock.now()
    who = f"cli:{getpass.getuser()}"
    [gone] = [h for h in holds.read(any_db) if h.app == "default"]
    assert gone.lifted_by == who and not gone.active(clock.now())
    left = herald(capsys, "holds", "--config", cfg).out
    assert "app default" not in left and "app shop on sms" in left
    every = herald(capsys, "holds", "--all", "--config", cfg).out
    assert f"lifted by {who}" in every
    shown = herald(capsys, "status", "--config", cfg).out
    assert "app shop on sms" in shown and "app default on" not in shown


def _metrics_url(daemon) -> str:
    import re

    found: list[str] = []

    def listed() -> bool:
        m = re.search(r"metrics on (http://\S+/metrics)", daemon.text())
        if m:
            found.append(m.group(1))
        return bool(m)

    assert wait_for(listed, 30), daemon.tail()
    return found[0]


def _held_series(url: str) -> list[dict[str, str]]:
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url, timeout=5).text
    return [dict(s.labels) for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "herald_quota_holds"]


@pytest.mark.slow
def test_two_daemons_one_sees_45009_the_other_sends_nothing_until_lifted(
        any_db, any_db_url, sandbox, tmp_path):
    """Real daemons on one database: the second never saw the 45009, yet sends nothing
    to the app until `herald holds --lift` (a real verb) ends the hold; its metrics
    endpoint shows the hold meanwhile."""
    from tests.support import DaemonProcess, write_config
    from tests.verbs_support import herald_child

    def config(name: str):
        folder = tmp_path / name
        folder.mkdir()
        return write_config(folder, api_base=sandbox.url, database=any_db_url,
                            jobs={"dispatch": {"every": "1s"}},
                            dispatch={"workers": 1},
                            metrics={"listen": "127.0.0.1:0"})

    first = _rows(any_db, 3, "a")
    sandbox.inject(45009)
    a = DaemonProcess(config("a"), tmp_path / "a.log", "a").start()
    b = DaemonProcess(config("b"), tmp_path / "b.log", "b")
    try:
        a.wait_ready()
        assert wait_for(lambda: holds.active(any_db, clock.now()), 30), a.tail()
        assert wait_for(lambda: all(row(i).status == "wait" for i in first), 10), a.tail()
        assert len(sandbox.received) == 1
        b.start()
        b.wait_ready()
        url = _metrics_url(b)
        assert _held_series(url) == [{"app": "default", "channel": "subscribe"}]
        later = _rows(any_db, 3, "b")
        # several dispatch runs of each daemon (every 1 s) claim the new rows, defer them
        assert wait_for(lambda: all(row(i).status == "wait" and row(i).attempts == 0
                                    and row(i).send_at > clock.now() for i in later), 15)
        time.sleep(2.5)
        assert len(sandbox.received) == 1, (a.tail(), b.tail())
        lift = herald_child("holds", "--lift", "default", "--config", str(config("cli")))
        assert lift.code == 0, lift.text
        assert "6 waiting rows it had deferred are due now" in lift.out
        assert wait_for(lambda: all(row(i).status == "success" for i in first + later),
                        20), (a.tail(), b.tail())
        assert len(sandbox.accepted) == 6
        assert _held_series(url) == []
        assert a.stop() == 0 and b.stop() == 0
    finally:
        a.close()
        b.close()
    assert "quota spent; its sends on subscribe are held until" in a.text()


def test_in_memory_a_minute_hold_does_not_shorten_a_day_hold():
    """A 45011 answer to a send that was on the wire when the 45009 came back must not
    cut the app's hold down to the next minute."""
    now = clock.now()
    key = ("subscribe", "default")
    held: dispatch.Holds = {key: dispatch.Held(now + timedelta(seconds=60), "no access token",
                                               now, quota=False)}
    day = dispatch.Held(now + timedelta(hours=5), "deferred to the next quota day", now)
    minute = dispatch.Held(now + timedelta(seconds=30), "deferred to the next minute", now)
    dispatch._hold_app(held, key, day)  # a quota hold replaces a token hold
    dispatch._hold_app(held, key, minute)
    assert held[key] is day
    later = dispatch.Held(now + timedelta(hours=6), "deferred to the next quota day", now)
    dispatch._hold_app(held, key, later)
    assert held[key] is later


def test_a_45011_answered_after_a_45009_in_one_write_stores_the_day_hold(
        any_db, sandbox, runtime_factory, monkeypatch):
    """Two sends on the wire: the first answers 45009, the second 45011 a moment later,
    both written together: the stored hold is the day's, not the minute's."""
    monkeypatch.setattr(dispatch, "FLUSH_AFTER", 30.0)  # one write when both are back
    rt = runtime_factory(any_db, sandbox, dispatch={"workers": 2})
    ids = _rows(any_db, 2, "o")
    sandbox.inject(45009, openid="o0")
    sandbox.inject(45011, openid="o1")
    sandbox.hold("o0")
    sandbox.hold("o1")
    before = clock.now()
    import threading

    t = threading.Thread(target=lambda: run(rt), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: len(sandbox.received) == 2, 10)  # both on the wire
        sandbox.release("o0")
        assert wait_for(lambda: any(a.errcode == 45009 for a in sandbox.attempts), 10)
        time.sleep(0.2)  # the loop takes in the 45009 first
    finally:
        sandbox.release()
    t.join(60)
    [h] = holds.active(any_db, clock.now())
    assert h.until == rt.config.retry.daily_quota_reset.next_after(before)
    assert all(row(i).status == "wait" for i in ids)
