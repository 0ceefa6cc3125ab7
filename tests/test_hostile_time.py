"""SQLite send_at written in every form applications use goes out at the instant it
names: not a second early, not hours late (an offset read as UTC), whatever the form.

The rows are written by another connection (the stdlib driver, as any program would),
and dispatch runs with `now` one second before and exactly at the instant.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import clock
from db.connection import init_schema
from db.models import parse_utc
from db.schema import VERSION, split_statements
from jobs import dispatch
from tests.bound import connect
from tests.conftest import ROOT, make_config

PARAMS = '["Tea", 3, "shipped", "ok"]'
PLUS8 = timezone(timedelta(hours=8))
MINUS530 = timezone(-timedelta(hours=5, minutes=30))


def instant() -> datetime:
    """A whole minute a day ahead of the real clock (leases and tokens stay valid)."""
    return (clock.now() + timedelta(days=1)).replace(second=0, microsecond=0)


def forms(t: datetime) -> dict[str, object]:
    """openid -> the send_at value an application writes for instant `t` (or a moment
    before it, for the forms with fractions)."""
    half = t - timedelta(milliseconds=500)
    quarter = t - timedelta(milliseconds=250)
    return {
        "oPlain": t.strftime("%Y-%m-%d %H:%M:%S"),
        "oIsoZ": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "oIsoMinutesZ": t.strftime("%Y-%m-%dT%H:%MZ"),
        "oIsoPlus8": t.astimezone(PLUS8).strftime("%Y-%m-%dT%H:%M:%S+08:00"),
        "oIsoMinus530": t.astimezone(MINUS530).strftime("%Y-%m-%dT%H:%M:%S-05:30"),
        "oIsoSpacePlus8": t.astimezone(PLUS8).strftime("%Y-%m-%d %H:%M:%S +08:00"),
        "oFractionZ": half.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "oFractionPlain": half.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "oFractionPlus8": quarter.astimezone(PLUS8).strftime("%Y-%m-%dT%H:%M:%S.%f+08:00"),
        "oEpoch": int(t.timestamp()),
        "oEpochReal": half.timestamp(),
        "oEpochText": str(int(t.timestamp())),
    }


@pytest.fixture
def setup(tmp_path: Path, sandbox):
    url = f"sqlite:///{tmp_path / 'herald.db'}"
    db = connect(url)
    init_schema(db)
    app = sqlite3.connect(tmp_path / "herald.db", isolation_level=None)
    cfg = make_config(url, sandbox.url, tmp_path)
    from runtime import Runtime

    rt = Runtime.build(cfg, db)
    yield db, app, rt
    rt.close()
    app.close()
    db.close()


def statuses(db) -> dict[str, str]:
    return {o: s for o, s in db.execute_sql("SELECT openid, status FROM msg_list")}


def test_every_form_goes_out_at_its_instant(setup, sandbox):
    db, app, rt = setup
    t = instant()
    written = forms(t)
    for openid, value in written.items():
        app.execute("INSERT INTO msg_list (template, openid, params, send_at) "
                    "VALUES ('order_status', ?, ?, ?)", (openid, PARAMS, value))
    # a row a day after t, in the +08:00 form: at t it is a day early
    app.execute("INSERT INTO msg_list (template, openid, params, send_at) VALUES "
                "('order_status', 'oTomorrow', ?, ?)",
                (PARAMS, (t + timedelta(days=1)).astimezone(PLUS8).isoformat()))
    # what the database holds is Herald's form, the same instant
    for openid, stored in db.execute_sql("SELECT openid, send_at FROM msg_list"):
        assert isinstance(stored, str) and stored[4] == "-" and stored[10] == " ", stored
        if openid != "oTomorrow":
            assert t - timedelta(seconds=1) < parse_utc(stored) <= t, (openid, stored)

    dispatch.run(rt, now=lambda: t - timedelta(seconds=1))
    assert set(statuses(db).values()) == {"wait"}, statuses(db)  # not a second early
    assert sandbox.accepted_count() == 0

    dispatch.run(rt, now=lambda: t)
    got = statuses(db)
    assert {o: got[o] for o in written} == dict.fromkeys(written, "success"), got
    assert got["oTomorrow"] == "wait"
    assert sorted(m["touser"] for m in sandbox.accepted) == sorted(written)

    dispatch.run(rt, now=lambda: t + timedelta(days=1) - timedelta(seconds=1))
    assert statuses(db)["oTomorrow"] == "wait"
    dispatch.run(rt, now=lambda: t + timedelta(days=1))
    assert statuses(db)["oTomorrow"] == "success"


def test_the_claim_order_holds_across_forms(setup, sandbox):
    """Normalised at insert, so the index order is the time order: with one row to
    claim, the earliest instant goes first whatever form each row was written in."""
    db, app, rt = setup
    t = instant()
    order = [("oThird", (t + timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S")),
             ("oFirst", (t + timedelta(hours=1)).astimezone(PLUS8).isoformat()),
             ("oSecond", int((t + timedelta(seconds=1)).timestamp()))]
    # oFirst's text (+08:00 wall time) sorts after the others as written, yet it is an
    # hour after t in UTC: a later instant. The true order is oSecond, oThird, oFirst.
    for openid, value in order:
        app.execute("INSERT INTO msg_list (template, openid, params, send_at) "
                    "VALUES ('order_status', ?, ?, ?)", (openid, PARAMS, value))
    sent = []
    for step in (timedelta(seconds=1), timedelta(seconds=2), timedelta(hours=1)):
        dispatch.run(rt, now=lambda s=step: t + s)
        sent = [m["touser"] for m in sandbox.accepted]
    assert sent == ["oSecond", "oThird", "oFirst"]


@pytest.mark.parametrize("value", ["12:00", "12:00:00", "now", "2026-13-01 00:00:00",
                                   "0000-00-00 00:00:00", "abcdefghijklmnopqrs",
                                   "2026-02-30 10:00:00", "2026-01-01 25:00:00", "", "1x",
                                   "2026-1-1", "1e12", "yesterday"])
def test_what_is_no_time_is_refused_naming_the_column(setup, value):
    db, app, rt = setup
    for column in ("send_at", "expire_at", "created_at"):
        with pytest.raises(sqlite3.IntegrityError, match=f"msg_list.{column} is not a time"):
            app.execute(f"INSERT INTO msg_list (template, openid, {column}) "
                        "VALUES ('order_status', 'o', ?)", (value,))
        # and an UPDATE by another program is held to the same rule
        app.execute("INSERT INTO msg_list (template, openid) VALUES ('order_status', 'o')")
        with pytest.raises(sqlite3.IntegrityError, match=f"msg_list.{column} is not a time"):
            app.execute(f"UPDATE msg_list SET {column} = ? WHERE id = last_insert_rowid()",
                        (value,))
        app.execute("DELETE FROM msg_list")


def test_an_older_trigger_body_is_replaced_at_start(tmp_path):
    """A database whose triggers an earlier build made gets the current bodies."""
    path = tmp_path / "herald.db"
    db = connect(f"sqlite:///{path}")
    init_schema(db)
    db.execute_sql("DROP TRIGGER msg_list_send_at_insert")
    db.execute_sql("CREATE TRIGGER msg_list_send_at_insert AFTER INSERT ON msg_list "
                   "BEGIN SELECT 1; END")
    db.close()
    init_schema(db)  # what run, serve and init-db do at start
    app = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="send_at is not a time"):
        app.execute("INSERT INTO msg_list (template, openid, send_at) VALUES ('t', 'o', "
                    "'0000-00-00 00:00:00')")
    app.close()
    db.close()


def test_upgrade_from_v1_fixes_or_fails_the_times_it_finds(tmp_path):
    """A version-1 database has no triggers; its rows may hold any text. The upgrade
    rewrites what is a time and fails the waiting rows whose times are not, naming the
    column; finished rows keep their status."""
    path = tmp_path / "herald.db"
    app = sqlite3.connect(path, isolation_level=None)
    v1 = (ROOT / "tests" / "fixtures" / "schema_v1" / "sqlite.sql").read_text()
    for stmt in split_statements(v1):
        app.execute(stmt)
    t = datetime(2026, 5, 1, 4, 0, tzinfo=UTC)
    rows = {
        "oIso": ("wait", "send_at", "2026-05-01T12:00:00+08:00"),
        "oEpoch": ("wait", "send_at", int(t.timestamp())),
        "oZero": ("wait", "send_at", "0000-00-00 00:00:00"),
        "oNoon": ("wait", "send_at", "12:00"),
        "oJunk": ("wait", "expire_at", "abcdefghijklmnopqrs"),
        "oDone": ("success", "send_at", "0000-00-00 00:00:00"),
        "oCreated": ("wait", "created_at", "yesterday"),
    }
    for openid, (status, column, value) in rows.items():
        app.execute(f"INSERT INTO msg_list (template, openid, status, {column}) "
                    "VALUES ('order_status', ?, ?, ?)", (openid, status, value))
    app.execute("INSERT INTO msg_list (template, openid, priority) "
                "VALUES ('order_status', 'oPrio', 1.5)")
    db = connect(f"sqlite:///{path}")
    assert init_schema(db) == list(range(2, VERSION + 1))
    got = {o: (s, v, e) for o, s, v, e in app.execute(
        "SELECT openid, status, send_at, error FROM msg_list")}
    assert got["oIso"][:2] == ("wait", "2026-05-01 04:00:00.000")
    assert got["oEpoch"][:2] == ("wait", "2026-05-01 04:00:00.000")
    for openid, column in (("oZero", "send_at"), ("oNoon", "send_at"), ("oJunk", "expire_at"),
                           ("oCreated", "created_at")):
        status, _, error = got[openid]
        assert status == "fail" and f"msg_list.{column} is not a time" in error, got[openid]
    assert got["oDone"][0] == "success"
    assert got["oPrio"][0] == "fail" and "priority" in got["oPrio"][2]
    app.close()
    db.close()


def test_unreadable_times_of_other_columns_do_not_stop_a_claim(setup, sandbox):
    """lease_until and updated_at have no trigger: text there is overwritten by the
    claim, never decoded from what the application wrote."""
    db, app, rt = setup
    app.execute("INSERT INTO msg_list (template, openid, params, lease_until, updated_at) "
                "VALUES ('order_status', 'oOdd', ?, 'soon', 'whenever')", (PARAMS,))
    assert dispatch.run(rt).sent == 1
    assert statuses(db) == {"oOdd": "success"}
