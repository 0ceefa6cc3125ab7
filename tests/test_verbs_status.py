"""status: waiting rows split as they behave, per app and template, daemons, tokens,
alerts, human ages, --json; never raises on rows other programs wrote badly; cheap."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from datetime import timedelta

import pytest

import clock
from db.dialects import dialect
from db.heartbeat import beat
from db.schema import VERSION
from tests.support import APPID, SECRET, DaemonProcess, wait_for, write_config
from tests.verbs_support import ago, clear_side_tables, herald, herald_child, seed


def squeeze(text: str) -> str:
    """Each line with its runs of spaces made one (column widths are not the point)."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


@pytest.fixture
def queue(any_db, any_db_url, tmp_path):
    clear_side_tables(any_db)
    return any_db, str(write_config(tmp_path, database=any_db_url))


def fill(db) -> dict[str, int]:
    """One row in each state status tells apart."""
    now = clock.now()
    return {
        "due": seed(db, send_at=ago(200, now)),
        "due2": seed(db, send_at=ago(7500, now), app="default"),
        "scheduled": seed(db, send_at=ago(-7200, now)),
        "retrying": seed(db, send_at=ago(-30, now), attempts=1, errcode=-1,
                         error="will retry: -1 WeChat system busy"),
        "held_quota": seed(db, send_at=ago(-40, now), errcode=45011,
                           error="deferred to the next minute: 45011 quota"),
        "held_token": seed(db, send_at=ago(-50, now), error="no access token: 40125 bad"),
        "held_grant": seed(db, send_at=ago(-3000, now), template="vip_pay_success",
                           error="held: no grant (the user rejected this template)"),
        "sending": seed(db, status="sending", claimed_by="h:1:a", lease_until=ago(-200, now)),
        "stale": seed(db, status="sending", claimed_by="h:2:b", lease_until=ago(60, now)),
        "success": seed(db, status="success", msgid="1", sent_at=ago(10, now)),
        "fail": seed(db, status="fail", errcode=43101, updated_at=ago(180, now),
                     error="43101 user has not subscribed"),
        "fail_old": seed(db, status="fail", error="expired", updated_at=ago(3 * 86400, now),
                         template="vip_pay_success"),
        "fail_nocode": seed(db, status="fail", error="params is not valid JSON", app="shop",
                            updated_at=ago(60, now)),
        "cancelled": seed(db, status="cancelled"),
    }


def test_status_splits_waiting_rows_and_counts_per_template(queue, capsys):
    db, cfg = queue
    ids = fill(db)
    now = clock.now()
    beat(db, daemon_id="hostA:42:abc", role="run", started_at=now - timedelta(hours=2, minutes=5),
         now=now - timedelta(seconds=5), last_dispatch=now - timedelta(seconds=12),
         info={"alerts": {"shop": "40125 invalid appsecret: check apps.shop.secret"}})
    beat(db, daemon_id="hostB:7:def", role="run", started_at=now - timedelta(days=3),
         now=now - timedelta(days=2), info={"alerts": {"default": "old news"}})
    d = dialect(db)
    with db.connection_context():
        db.execute_sql(f"INSERT INTO access_token (app, token, expires_at, refreshed_at, "
                       f"refreshed_by) VALUES ({d.param}, {d.param}, {d.param}, {d.param}, "
                       f"{d.param})", ("default", "TOKEN-VALUE-123", d.ts(now + timedelta(
                           minutes=92)), d.ts(now - timedelta(minutes=28)), "hostA:42:abc"))
    ran = herald(capsys, "status", "--config", cfg)
    assert ran.code == 0, ran.text
    out = ran.out
    flat = squeeze(out)
    assert "\nwait 7 2 due, 1 scheduled, 1 retrying, 1 held for quota, 1 held for a token, " \
           "1 held for a grant\n" in flat
    assert "\nsending 2 1 past their lease (stale_retry recovers them)\n" in flat
    assert "\nfail 3 2 in the last 24 h\n" in flat
    assert f"oldest due row: #{ids['due2']}, due 2 h 5 min ago" in out
    table = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()
             if line.startswith(("default ", "shop "))}
    #            due sched retry held sending failed24h
    assert table[("default", "order_status")] == ["2", "1", "1", "2", "2", "1"]
    assert table[("default", "vip_pay_success")] == ["0", "0", "0", "1", "0", "0"]
    assert table[("shop", "order_status")] == ["0", "0", "0", "0", "0", "1"]
    assert "daemons: 1 alive, 1 gone" in out
    from version import __version__

    assert re.search(rf"run   \S+ pid \d+ v{re.escape(__version__)}  alive: started 2 h 5 min "
                     r"ago, last seen 5 s ago, last dispatch 12 s ago", out)
    assert "GONE: started 3 d ago, last seen 2 d ago, last dispatch not yet" in out
    assert re.search(r"\ndefault expires in 1 h 3[12] min, refreshed 28 min ago by "
                     r"hostA:42:abc\n", flat)
    assert "configuration alerts:\n  app shop: 40125 invalid appsecret" in out
    assert "old news" not in out  # a gone daemon's alerts are not in force
    assert f"#{ids['fail_nocode']} order_status (1 min ago) params is not valid JSON" in out
    assert f"#{ids['fail']} order_status (3 min ago) errcode 43101: 43101 user" in out
    assert "errcode=None" not in out and "None" not in out
    assert "TOKEN-VALUE-123" not in ran.text
    assert not re.search(r"\d{5,}s", out)  # no "218271955s old"

    data = json.loads(herald(capsys, "status", "--config", cfg, "--json").out)
    assert data["counts"] == {"wait": 7, "sending": 2, "success": 1, "fail": 3, "cancelled": 1}
    assert {k: data["open"][k] for k in ("due", "scheduled", "retrying", "held_quota",
                                         "held_token", "held_grant", "sending", "stale")} == {
        "due": 2, "scheduled": 1, "retrying": 1, "held_quota": 1, "held_token": 1,
        "held_grant": 1, "sending": 1, "stale": 1}
    assert data["oldest_due"]["id"] == ids["due2"]
    assert 7490 < data["oldest_due"]["age_seconds"] < 7600
    assert data["failed_24h"] == 2
    assert [dm["alive"] for dm in data["daemons"]] == [True, False]
    assert data["alerts"] == [{"app": "shop", "reason": "40125 invalid appsecret: check "
                               "apps.shop.secret", "daemon": "hostA:42:abc"}]
    [tok] = data["tokens"]
    assert tok["app"] == "default" and 5400 < tok["expires_in_seconds"] <= 5520
    assert "token" not in {k for k in tok if k != "refreshed_by"} - {"app", "source"}
    assert "TOKEN-VALUE-123" not in json.dumps(data)
    assert [f["id"] for f in data["recent_failures"]] == [ids["fail_nocode"], ids["fail"],
                                                          ids["fail_old"]]
    assert data["problems"] == []


def test_status_on_an_empty_queue_says_so(queue, capsys):
    _, cfg = queue
    out = herald(capsys, "status", "--config", cfg).out
    assert "oldest due row: none" in out
    assert "daemons: none has reported" in out
    assert "tokens:\ndefault none yet" in squeeze(out)


def test_status_missing_database_file_is_one_sentence(tmp_path, capsys):
    cfg = str(write_config(tmp_path))
    ran = herald(capsys, "status", "--config", cfg)
    assert ran.code == 1
    assert ran.err.strip() == (f"database sqlite:///{tmp_path}/herald.db: the file "
                               f"{tmp_path}/herald.db does not exist (run `init-db`, or start "
                               "the daemon: it creates the tables)")
    assert not (tmp_path / "herald.db").exists()  # status created nothing


def test_readers_never_raise_on_rows_other_programs_wrote_badly(db, db_url, tmp_path, capsys):
    """SQLite keeps what it is given: bytes that are not UTF-8, a time that is no time
    (written before the v2 triggers, or in columns they do not guard), text errcodes."""
    cfg = str(write_config(tmp_path, database=db_url))
    with db.connection_context():
        db.execute_sql("DROP TRIGGER msg_list_send_at_insert")  # a v1 database had none
    bad = [
        seed(db, template=b"\xff\xfebad", app=b"\xff", error=b"\xff"),
        seed(db, send_at="1x"),
        seed(db, status="fail", updated_at="yesterday", errcode="abc", error=b"\xfe"),
        seed(db, status="sending", lease_until="soon", claimed_by=b"\xff"),
    ]
    good = seed(db)
    ran = herald(capsys, "status", "--config", cfg)
    assert ran.code == 0, ran.text
    assert "\nwait 3 3 due, 0 scheduled, 0 retrying\n" in squeeze(ran.out)
    assert "order_status (time unknown) b'\\xfe'" in ran.out
    assert "oldest due row: #" in ran.out
    data = json.loads(herald(capsys, "status", "--config", cfg, "--json").out)
    assert data["counts"]["fail"] == 1 and data["problems"] == []
    [failure] = data["recent_failures"]
    assert failure["errcode"] is None and failure["updated_at"] is None
    for rid in [*bad, good]:
        shown = herald(capsys, "show", str(rid), "--config", cfg)
        assert shown.code == 0, (rid, shown.text)
    assert "send_at is an unreadable time '1x'" in herald(capsys, "show", str(bad[1]),
                                                          "--config", cfg).out
    listed = herald(capsys, "list", "--config", cfg)
    assert listed.code == 0 and len(listed.out.splitlines()) == 1 + len(bad) + 1


def test_status_queries_are_answered_from_indexes(db, db_url, tmp_path, capsys, caplog):
    """With a million finished rows a full scan per call is too slow: every msg_list
    query status runs must search an index (SQLite's plan; PostgreSQL has the same
    indexes and more)."""
    cfg = str(write_config(tmp_path, database=db_url))
    fill(db)
    caplog.set_level(logging.DEBUG, logger="peewee")  # peewee logs each (sql, params)
    assert herald(capsys, "status", "--config", cfg).code == 0
    queries = [r.msg for r in caplog.records if r.name == "peewee" and isinstance(r.msg, tuple)
               and "msg_list" in r.msg[0] and r.msg[0].lstrip().upper().startswith("SELECT")]
    assert len(queries) >= 5, caplog.records
    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    try:
        for sql, params in queries:
            plan = " / ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql,
                                                         params or ()))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (sql, plan)
            assert not re.search(r"SCAN (t1|msg_list)( |$)(?!USING)", plan), (sql, plan)
    finally:
        con.close()


@pytest.mark.slow
def test_a_running_daemon_reports_its_heartbeat_tokens_and_alerts(tmp_path, sandbox):
    cfg = write_config(tmp_path, api_base=sandbox.url, jobs={"dispatch": {"every": "1s"}},
                       apps={"default": {"appid": APPID, "secret": SECRET},
                             "shop": {"appid": "wxshop0000000002", "secret": "wrong-secret"}})
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()

        def reported():
            data = json.loads(herald_child("status", "--json", "--config", str(cfg)).out)
            alive = [d for d in data["daemons"] if d["alive"]]
            return data if alive and alive[0]["last_dispatch"] else None

        assert wait_for(reported, 30, step=0.5), daemon.tail()
        data = reported()
        [d] = data["daemons"]
        assert d["daemon_id"] == daemon.daemon_id and d["role"] == "run"
        assert d["info"]["tokens"]["default"] and d["info"]["tokens"]["shop"] is None
        [alert] = data["alerts"]
        assert alert["app"] == "shop" and ("40013" in alert["reason"]
                                           or "40125" in alert["reason"]), alert
        text = herald_child("status", "--config", str(cfg)).out
        assert "daemons: 1 alive" in text and "configuration alerts:\n  app shop: " in text
        assert re.search(r"\ndefault expires in 1 h 59 min, refreshed \d+ s ago", squeeze(text))
        assert daemon.stop() == 0
    finally:
        daemon.close()
    data = json.loads(herald_child("status", "--json", "--config", str(cfg)).out)
    assert data["daemons"] == []  # a clean stop removes its row


def test_a_database_of_the_previous_release_is_shown_and_named(tmp_path, capsys):
    """Before `init-db` upgrades it, a v1 queue still shows; what needs v2 says so."""
    import sqlite3 as sq

    from db.connection import split_statements
    from tests.support import ROOT

    path = tmp_path / "herald.db"
    con = sq.connect(path)
    for stmt in split_statements((ROOT / "tests/fixtures/schema_v1/sqlite.sql").read_text()):
        con.execute(stmt)
    con.execute("INSERT INTO msg_list (template, openid, params) VALUES ('order_status', "
                "'oU', '[]')")
    con.commit()
    con.close()
    cfg = str(write_config(tmp_path))
    ran = herald(capsys, "status", "--config", cfg)
    assert ran.code == 0, ran.text
    assert f"note: schema version 1, this release needs {VERSION} (run init-db" in ran.out
    assert "\nwait 1 1 due" in squeeze(ran.out)
    shown = herald(capsys, "show", "1", "--config", cfg)
    assert shown.code == 0 and "note: no history: " in shown.out
    assert herald(capsys, "list", "--config", cfg).code == 0
    refused = herald(capsys, "cancel", "1", "--config", cfg)
    assert refused.code == 1 and f"schema version 1, this release needs {VERSION}" in refused.err
    assert herald(capsys, "init-db", "--config", cfg).out.endswith(
        f"(upgraded from schema version 1 to {VERSION})\n")
    assert herald(capsys, "cancel", "1", "--config", cfg).code == 0


def test_due_count_for_the_progress_line(queue):
    """What dispatch's progress line can say is left: due rows, counted to a cap."""
    from db.queue import due_count

    db, _ = queue
    fill(db)
    with db.connection_context():
        assert due_count(db, clock.now()) == 2
        assert due_count(db, clock.now(), cap=1) == 1
