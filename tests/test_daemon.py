"""The daemon as systemd runs it: a real subprocess, real signals."""

from __future__ import annotations

import signal
import time

import pytest

from db.connection import init_schema
from db.models import MsgList
from tests.bound import connect
from tests.conftest import insert_sql
from tests.support import SECRET, DaemonProcess, wait_for, write_config

pytestmark = pytest.mark.slow
GOOD = '["Tea", 3, "shipped", "ok"]'


def status_of(db, rid: int) -> str:
    with db.connection_context():
        return MsgList.get_by_id(rid).status


def test_sigterm_during_an_in_flight_send_records_it_and_exits_0(tmp_path, sandbox):
    sandbox.latency = 1.5
    cfg = write_config(tmp_path, api_base=sandbox.url)
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    with db.connection_context():
        rid = insert_sql(db, template="order_status", openid="oSlow", params=GOOD)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        assert wait_for(lambda: status_of(db, rid) == "sending"), "row never claimed"
        time.sleep(0.3)  # the request is now inside the sandbox's latency
        code = daemon.stop(signal.SIGTERM, timeout=20)
    finally:
        daemon.close()
    log = daemon.text()
    assert code == 0, log
    with db.connection_context():
        r = MsgList.get_by_id(rid)
    assert r.status == "success" and r.msgid == sandbox.accepted[0]["msgid"]
    assert "SIGTERM" in log and "herald stopped" in log
    with db.connection_context():
        token = db.execute_sql("SELECT token FROM access_token").fetchone()[0]
    assert token and len(token) > 10
    assert SECRET not in log and token not in log


def test_sigint_stops_an_idle_daemon_at_once(tmp_path, sandbox):
    cfg = write_config(tmp_path, api_base=sandbox.url)
    init_schema(connect(f"sqlite:///{tmp_path / 'herald.db'}"))
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        assert wait_for(lambda: sandbox.token_calls["stable"] == 1)
        time.sleep(0.5)
        t0 = time.monotonic()
        code = daemon.stop(signal.SIGINT, timeout=10)
        assert time.monotonic() - t0 < 5
    finally:
        daemon.close()
    assert code == 0, daemon.tail()
