"""The daemon as systemd runs it: a real subprocess, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db.connection import connect, init_schema
from db.models import MsgList
from tests.conftest import ROOT, SECRET, insert_sql
from tests.test_cli import write_config

pytestmark = pytest.mark.slow
GOOD = '["Tea", 3, "shipped", "ok"]'


def start_daemon(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scheduler.py"), "--config",
                             str(config), "run", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 15.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


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
    proc = start_daemon(cfg)
    try:
        assert wait_for(lambda: status_of(db, rid) == "sending"), "row never claimed"
        time.sleep(0.3)  # the request is now inside the sandbox's latency
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    with db.connection_context():
        r = MsgList.get_by_id(rid)
    assert r.status == "success" and r.msgid == sandbox.accepted[0]["msgid"]
    assert "SIGTERM" in err and "herald stopped" in err
    with db.connection_context():
        token = db.execute_sql("SELECT token FROM access_token").fetchone()[0]
    assert token and len(token) > 10
    assert SECRET not in err + out and token not in err + out


def test_sigint_stops_an_idle_daemon_at_once(tmp_path, sandbox):
    cfg = write_config(tmp_path, api_base=sandbox.url)
    init_schema(connect(f"sqlite:///{tmp_path / 'herald.db'}"))
    proc = start_daemon(cfg)
    try:
        assert wait_for(lambda: sandbox.token_calls["stable"] == 1)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
    finally:
        proc.kill()
    assert proc.returncode == 0
