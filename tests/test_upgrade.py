"""A database made by the first release upgrades in place, on all three dialects, with
every row kept and the waiting ones delivered after. The first release's DDL is kept
in tests/fixtures/schema_v1 exactly as `schema --dialect ...` printed it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from db.connection import dialect_of
from db.models import MsgList, PushEvent, SubscribeGrant
from db.schema import VERSION, init_schema, split_statements, state
from jobs import dispatch
from tests.bound import connect
from tests.conftest import ROOT, insert_sql
from tests.support import clean_env, write_config

V1 = ROOT / "tests" / "fixtures" / "schema_v1"
GOOD = '["Tea", 12.5, "shipped", "thanks"]'


def make_v1(db) -> None:
    with db.connection_context():
        for stmt in split_statements((V1 / f"{dialect_of(db)}.sql").read_text()):
            db.execute_sql(stmt)


def v1_rows(db) -> dict[str, int]:
    """Rows as the first release's applications and daemon left them."""
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ts = t.strftime("%Y-%m-%d %H:%M:%S")
    ids = {
        "waiting": insert_sql(db, template="order_status", openid="o1", params=GOOD),
        "scheduled": insert_sql(db, template="order_status", openid="o2", params=GOOD,
                                send_at=(t + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")),
        "delivered": insert_sql(db, template="order_status", openid="o3", params=GOOD,
                                status="success", msgid="1988810812324364291", attempts=1,
                                sent_at=ts),
        "failed": insert_sql(db, template="order_status", openid="o4", params=GOOD,
                             status="fail", errcode=43101, error="43101 user refused",
                             attempts=1, dedup_key="order-4"),
    }
    return ids


def test_state_of_a_first_release_database(any_db_url):
    db = connect(any_db_url)
    assert state(db).version is None
    make_v1(db)
    assert state(db).version == 1 and not state(db).up_to_date
    assert "run init-db" in state(db).describe()


def test_upgrade_keeps_every_row_and_delivers_the_waiting_ones(any_db_url, sandbox,
                                                               runtime_factory):
    db = connect(any_db_url)
    make_v1(db)
    ids = v1_rows(db)
    with db.connection_context():
        before = {r.id: (r.status, r.template, r.openid, r.params, r.msgid, r.errcode, r.error,
                         r.attempts, r.dedup_key, r.send_at, r.created_at)
                  for r in MsgList.select(MsgList.id, MsgList.status, MsgList.template,
                                          MsgList.openid, MsgList.params, MsgList.msgid,
                                          MsgList.errcode, MsgList.error, MsgList.attempts,
                                          MsgList.dedup_key, MsgList.send_at,
                                          MsgList.created_at)}
    assert init_schema(db) == list(range(2, VERSION + 1))
    assert state(db).up_to_date and init_schema(db) == []  # twice is harmless
    with db.connection_context():
        after = {r.id: (r.status, r.template, r.openid, r.params, r.msgid, r.errcode, r.error,
                        r.attempts, r.dedup_key, r.send_at, r.created_at)
                 for r in MsgList.select(MsgList.id, MsgList.status, MsgList.template,
                                         MsgList.openid, MsgList.params, MsgList.msgid,
                                         MsgList.errcode, MsgList.error, MsgList.attempts,
                                         MsgList.dedup_key, MsgList.send_at,
                                         MsgList.created_at)}
        # the new tables and columns are there and usable
        assert PushEvent.select().count() == 0 and SubscribeGrant.select().count() == 0
        assert MsgList.get_by_id(ids["delivered"]).receipt is None
    assert after == before
    rt = runtime_factory(db, sandbox, db_url=any_db_url)
    with db.connection_context():
        dispatch.run(rt)
        waiting = MsgList.get_by_id(ids["waiting"])
        scheduled = MsgList.get_by_id(ids["scheduled"])
    assert waiting.status == "success" and waiting.msgid
    assert scheduled.status == "wait"
    # an application keeps inserting rows the old way
    new = insert_sql(db, template="order_status", openid="o5", params=GOOD)
    with db.connection_context():
        dispatch.run(rt)
        assert MsgList.get_by_id(new).status == "success"


def test_sqlite_upgrade_rewrites_old_odd_times_and_fails_unreadable_ones(tmp_path):
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    make_v1(db)
    iso = insert_sql(db, template="t", openid="a", send_at="2026-12-01T07:15:01+08:00")
    epoch = insert_sql(db, template="t", openid="b", send_at=1796112949)
    junk = insert_sql(db, template="t", openid="c", send_at="soon")
    init_schema(db)
    with db.connection_context():
        raw = dict(db.execute_sql("SELECT id, send_at FROM msg_list").fetchall())
        bad = db.execute_sql("SELECT status, error FROM msg_list WHERE id = ?",
                             (junk,)).fetchone()
    assert raw[iso] == "2026-11-30 23:15:01.000"
    assert raw[epoch] == "2026-12-01 08:15:49.000"
    assert bad[0] == "fail" and "send_at is not a time" in bad[1] and "'soon'" in bad[1]


@pytest.mark.slow
def test_init_db_and_run_upgrade_in_place(tmp_path, sandbox):
    """The verbs do it too: init-db, and run at start."""
    for verb in ("init-db", "run"):
        folder = tmp_path / verb
        folder.mkdir()
        cfg = write_config(folder, api_base=sandbox.url, jobs={"dispatch": {"every": "1s"}})
        db = connect(f"sqlite:///{folder / 'herald.db'}")
        make_v1(db)
        rid = insert_sql(db, template="order_status", openid=f"o-{verb}", params=GOOD)
        if verb == "init-db":
            out = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "--config",
                                  str(cfg), "init-db"], cwd=ROOT, env=clean_env(),
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
        else:
            from tests.support import DaemonProcess, wait_for

            d = DaemonProcess(cfg, folder / "run.log").start()
            try:
                d.wait_ready()
                assert wait_for(lambda db=db, rid=rid: _status(db, rid) == "success", 20), \
                    d.tail()
                assert "upgraded the schema from version 1" in d.text()
            finally:
                d.stop()
                d.close()
        assert state(db).up_to_date


def _status(db, rid: int) -> str:
    with db.connection_context():
        return MsgList.get_by_id(rid).status


def test_a_newer_schema_is_refused(tmp_path):
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    with db.connection_context():
        db.execute_sql("INSERT INTO herald_schema (version, description) VALUES (99, 'x')")
    from db.schema import SchemaError, ensure_current

    with pytest.raises(SchemaError, match="newer than this release"):
        ensure_current(db)


V2 = ROOT / "tests" / "fixtures" / "schema_v2"


def make_v2(db) -> None:
    """A database as the previous release left it: its DDL (kept exactly in
    tests/fixtures/schema_v2) and its herald_schema rows."""
    with db.connection_context():
        for stmt in split_statements((V2 / f"{dialect_of(db)}.sql").read_text()):
            db.execute_sql(stmt)
        for version in (1, 2):
            db.execute_sql(f"INSERT INTO herald_schema (version, description) VALUES "
                           f"({version}, 'v{version}')")


def test_upgrade_from_v2_adds_the_quota_holds_and_keeps_rows(any_db_url, sandbox,
                                                             runtime_factory):
    from db import holds

    db = connect(any_db_url)
    make_v2(db)
    assert state(db).version == 2
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    assert init_schema(db) == [3] and state(db).up_to_date
    now = datetime.now(UTC)
    with db.connection_context():
        assert holds.read(db) == []
        holds.publish(db, [holds.New("default", "subscribe", now + timedelta(hours=1),
                                     "deferred to the next quota day: 45009")],
                      who="test", now=now)
        assert [(h.app, h.channel) for h in holds.active(db, now)] == [("default", "subscribe")]
        description = db.execute_sql(
            "SELECT description FROM herald_schema WHERE version = 3").fetchone()[0]
    assert "quota_hold" in description
    rt = runtime_factory(db, sandbox, db_url=any_db_url)
    with db.connection_context():
        dispatch.run(rt)
        held = MsgList.get_by_id(rid)
    # the hold the upgrade's new table holds is honoured at once
    assert held.status == "wait" and sandbox.received == []
