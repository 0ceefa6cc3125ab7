"""An application's INSERT never meets "database is locked" because Herald waits on a
remote: real processes (a `run` daemon, the WeChat sandbox, an application inserting a
row every 0.5 s with Python sqlite3's default 5 s busy timeout) on one SQLite file.

- the token endpoint 8 s slow: the refresh at start, and one a 42001 forces mid-run;
- sends slow (3 s each, 4 workers, on_stale: fail, so each send also writes
  started_at first).

Herald's own writes are short; a transaction held across an 8 s token call (the old
refresh ran inside BEGIN IMMEDIATE) makes the application's insert give up after 5 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db.connection import init_schema
from tests.bound import connect
from tests.support import DaemonProcess, SandboxProcess, wait_for, write_config

pytestmark = pytest.mark.slow

# The application: Python's sqlite3 as anyone would use it (default timeout, 5 s), one
# INSERT and commit every 0.5 s until SIGTERM; counts what got in and what was locked.
APP = r'''
import json, signal, sqlite3, sys, time
path, out = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
ok = locked = other = 0
slowest = 0.0
n = 0
while not stop:
    n += 1
    t0 = time.monotonic()
    try:
        conn = sqlite3.connect(path)  # timeout=5.0, the default
        conn.execute("INSERT INTO msg_list (template, openid, params) VALUES (?, ?, ?)",
                     ("order_status", f"oApp{n}", '["Tea", 3, "shipped", "ok"]'))
        conn.commit()
        conn.close()
        ok += 1
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            locked += 1
        else:
            other += 1
    slowest = max(slowest, time.monotonic() - t0)
    with open(out + ".tmp", "w") as f:
        json.dump({"ok": ok, "locked": locked, "other": other, "slowest": slowest}, f)
    time.sleep(0.5)
'''


class Application:
    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "app.py"
        script.write_text(APP)
        self.out = tmp_path / "app.json"
        self.proc = subprocess.Popen([sys.executable, str(script),
                                      str(tmp_path / "herald.db"), str(self.out)])

    def counts(self) -> dict:
        try:
            return json.loads(Path(str(self.out) + ".tmp").read_text())
        except (OSError, ValueError):
            return {"ok": 0, "locked": 0, "other": 0, "slowest": 0.0}

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        return self.counts()


def delivered(db) -> int:
    with db.connection_context():
        return db.execute_sql("SELECT COUNT(*) FROM msg_list WHERE status = 'success'"
                              ).fetchone()[0]


def test_a_slow_token_endpoint_never_locks_out_an_insert(tmp_path: Path):
    """Two daemons on the file, starting together: one fetches (8 s), the other waits for
    its token; a 42001 later makes them refresh again, once."""
    with SandboxProcess(tmp_path) as sb:
        sb.call("POST", "config", {"token_latency": 8.0})
        cfg = write_config(tmp_path, api_base=sb.url, http={"timeout": "12s"},
                           jobs={"dispatch": {"every": "1s"}})
        db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
        init_schema(db)
        app = Application(tmp_path)
        daemons = [DaemonProcess(cfg, tmp_path / f"daemon{i}.log", f"d{i}").start()
                   for i in range(2)]
        try:
            t0 = time.monotonic()
            for d in daemons:  # the first token fetch (8 s) comes before ready
                d.wait_ready(timeout=60)
            first = time.monotonic() - t0
            assert sb.stats()["token_calls"]["stable"] == 1  # one fetch for both
            assert wait_for(lambda: delivered(db) >= 4, timeout=30), daemons[0].tail()
            # every token WeChat gave is now stale: the next sends answer 42001, and
            # dispatch refreshes (8 s again) in the middle of the run
            sb.call("POST", "expire_tokens")
            assert wait_for(lambda: sb.stats()["token_calls"]["stable"] > 1, timeout=30)
            settled = delivered(db)
            assert wait_for(lambda: delivered(db) > settled + 4, timeout=40), (
                daemons[0].tail(), daemons[1].tail())
            for d in daemons:
                assert d.stop(signal.SIGTERM) == 0, d.tail()
        finally:
            for d in daemons:
                d.close()
            result = app.stop()
        stats = sb.stats()
    print(f"\nslow token endpoint, 2 daemons: {result['ok']} inserts, {result['locked']} "
          f"locked, slowest {result['slowest']:.2f} s; token latency 8 s, both ready after "
          f"{first:.1f} s, {stats['token_calls']['stable']} token calls")
    assert stats["token_calls"]["stable"] == 2  # one at start, one after the 42001
    assert result["ok"] >= 30 and result["locked"] == 0 and result["other"] == 0, result
    assert result["slowest"] < 1.0, result  # no insert waited on Herald


def test_slow_sends_never_lock_out_an_insert(tmp_path: Path):
    with SandboxProcess(tmp_path, latency=3.0) as sb:
        cfg = write_config(tmp_path, api_base=sb.url, http={"timeout": "5s"},
                           jobs={"dispatch": {"every": "1s"}, "stale_retry": {"every": "1s"}},
                           dispatch={"workers": 4, "lease": "30s", "on_stale": "fail"})
        db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
        init_schema(db)
        app = Application(tmp_path)
        d = DaemonProcess(cfg, tmp_path / "daemon.log").start()
        try:
            d.wait_ready(timeout=60)
            # the application's rows go out 3 s each, 4 at a time, for ~20 s
            assert wait_for(lambda: delivered(db) >= 24, timeout=60), d.tail()
            assert d.stop(signal.SIGTERM) == 0, d.tail()
        finally:
            d.close()
            result = app.stop()
    print(f"\nslow sends (3 s): {result['ok']} inserts, {result['locked']} locked, slowest "
          f"{result['slowest']:.2f} s")
    assert result["ok"] >= 30 and result["locked"] == 0 and result["other"] == 0, result
    assert result["slowest"] < 1.0, result


def test_the_application_script_does_meet_a_held_lock(tmp_path: Path):
    """The measuring stick works: a write lock held 8 s is what it reports as locked."""
    import sqlite3

    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    db.close()
    app = Application(tmp_path)
    try:
        assert wait_for(lambda: app.counts()["ok"] >= 2, timeout=20)
        holder = sqlite3.connect(tmp_path / "herald.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        assert wait_for(lambda: app.counts()["locked"] >= 1, timeout=20)
        holder.execute("ROLLBACK")
        holder.close()
    finally:
        result = app.stop()
    assert result["locked"] >= 1
