"""dispatch.processes: one `herald run` as N dispatch processes on one queue.

The shares first (db/dialects.py: each process claims only rows whose recipient hashes
to its share), on every engine; then the real thing: `scheduler.py run` with
processes: 2 as a subprocess, its children real processes too, against the sandbox
(which counts what it accepted and answers 43108, counted as a violation, to a second
send to a user while one is in flight).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import ConfigError
from db.claim import claim_batch
from db.connection import init_schema
from db.models import MsgList
from service.processes import SHARE_ENV, child_share
from tests.bound import connect
from tests.conftest import database_url, insert_sql
from tests.support import DaemonProcess, clean_env, wait_for, write_config


def _openid(i: int) -> str:
    return f"oUser{i:04d}x{i * 7919 % 1000:03d}"


# -- the shares ---------------------------------------------------------------------------


def test_shares_split_the_queue_by_recipient(any_db) -> None:
    """Two shares of 2: every due row claimed once, all rows of one openid (or of one
    phone without an openid) in one share, and both shares get rows."""
    from datetime import UTC, datetime

    expected: dict[int, str] = {}
    for i in range(60):
        for _ in range(3):
            rid = insert_sql(any_db, template="order_status", openid=_openid(i),
                             params='["a", 1, "b", "c"]')
            expected[rid] = _openid(i)
    for j in range(5):  # SMS rows: no openid, the phone decides
        for _ in range(2):
            rid = insert_sql(any_db, template="order_status", openid="", phone=f"+86138{j:08d}",
                             params='["a", 1, "b", "c"]')
            expected[rid] = f"+86138{j:08d}"
    now = datetime.now(UTC)
    got: dict[int, set[int]] = {}
    for k in (0, 1):
        rows = claim_batch(any_db, daemon_id=f"d{k}", now=now, lease=60, limit=1000,
                           share=(k, 2))
        got[k] = {r.id for r in rows}
    assert got[0].isdisjoint(got[1])
    assert got[0] | got[1] == set(expected)
    assert got[0] and got[1]
    share_of = {expected[i]: k for k, ids in got.items() for i in ids}
    for k, ids in got.items():
        assert all(share_of[expected[i]] == k for i in ids)  # a recipient stays in one share
    # nothing is left for a third look
    assert claim_batch(any_db, daemon_id="d2", now=now, lease=60, limit=1000) == []


def test_a_share_claim_survives_an_openid_that_is_not_utf8(tmp_path: Path) -> None:
    """SQLite keeps whatever bytes a program wrote; hashing them must not fail the claim
    (which would stop the whole share), and the row is claimed by exactly one share."""
    from datetime import UTC, datetime

    db = connect(f"sqlite:///{tmp_path / 'q.db'}")
    init_schema(db)
    with db.connection_context():
        db.execute_sql("INSERT INTO msg_list (template, openid, params) VALUES "
                       "('order_status', CAST(X'6ffffe' AS TEXT), '[]')")
        db.execute_sql("INSERT INTO msg_list (template, openid, params) VALUES "
                       "('order_status', 42, '[]')")
        now = datetime.now(UTC)
        ids = [r.id for k in (0, 1, 2) for r in claim_batch(
            db, daemon_id="d", now=now, lease=60, limit=10, share=(k, 3))]
    assert sorted(ids) == [1, 2]


@pytest.mark.parametrize("raw", ["2/2", "0/1", "a/2", "1/", "-1/2", "1/2/3", "100/200"])
def test_a_bad_share_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError):
        child_share({SHARE_ENV: raw})


def test_shares_read_from_the_environment() -> None:
    assert child_share({}) is None
    assert child_share({SHARE_ENV: "1/3"}) == (1, 3)


# -- the real daemon ----------------------------------------------------------------------

class Supervised(DaemonProcess):
    """`run` with dispatch.processes: 2; ready when the supervisor says all are."""

    READY = re.compile(r"herald running: (\d+) dispatch processes")

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None
                 ) -> None:
        super().__init__(config, log_path)
        self.env = env

    def start(self) -> Supervised:
        import subprocess
        import sys

        from tests.support import ROOT

        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scheduler.py"), "--config", str(self.config), "run"],
            cwd=ROOT, env=self.env or clean_env(), stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def children(self) -> dict[int, int]:
        """share index -> pid of its newest child, from the supervisor's log."""
        found: dict[int, int] = {}
        for m in re.finditer(r"dispatch process (\d+)/\d+ started \(pid (\d+)\)", self.text()):
            found[int(m.group(1))] = int(m.group(2))
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _fill(db: Any, users: int, per_user: int) -> None:
    with db.connection_context():
        rows = [{"template": "order_status", "openid": _openid(u),
                 "params": f'["item {u}-{n}", {n}, "shipped", "ok"]'}
                for n in range(per_user) for u in range(users)]
        with db.atomic():
            for i in range(0, len(rows), 200):
                MsgList.insert_many(rows[i:i + 200]).execute()


def _counts(db: Any) -> Counter:
    with db.connection_context():
        return Counter(s for (s,) in MsgList.select(MsgList.status).tuples())


def _claimers(db: Any) -> Counter:
    with db.connection_context():
        return Counter(c for (c,) in MsgList.select(MsgList.claimed_by)
                       .where(MsgList.status == "success").tuples())


def _setup(tmp_path: Path, url: str, sandbox: Any, **dispatch: Any) -> tuple[Path, Any]:
    cfg = write_config(
        tmp_path, api_base=sandbox.url, database=url,
        jobs={"dispatch": {"every": "1s"}, "stale_retry": {"every": "1s"}},
        dispatch={"processes": 2, "workers": 8, "batch_size": 20, "lease": "10s",
                  **dispatch},
        http={"timeout": "3s"})
    db = connect(url)
    init_schema(db)
    return cfg, db


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_two_processes_drain_a_backlog_once_one_send_per_user_at_a_time(
        dialect: str, tmp_path: Path, sandbox: Any) -> None:
    """Several rows per user: both processes send, every row exactly once, never two
    sends to one openid at once (the sandbox would answer 43108)."""
    url = database_url(dialect, tmp_path)
    sandbox.latency = 0.03
    users, per_user = 16, 30  # few users, many rows each: both processes want them all
    cfg, db = _setup(tmp_path, url, sandbox)
    _fill(db, users, per_user)
    d = Supervised(cfg, tmp_path / "run.log").start()
    try:
        assert wait_for(lambda: _counts(db)["success"] == users * per_user, timeout=120), (
            _counts(db), d.tail())
        assert d.stop(signal.SIGTERM, timeout=30) == 0, d.tail()
    finally:
        d.close()
    sent = Counter(m["touser"] for m in sandbox.accepted)
    assert sent == {_openid(u): per_user for u in range(users)}  # each row once
    assert sandbox.concurrency_violations() == 0
    assert len(_claimers(db)) == 2, _claimers(db)  # both processes sent
    assert "Traceback" not in d.text()


@pytest.mark.slow
def test_a_killed_process_is_started_again_and_its_rows_recovered(
        tmp_path: Path, sandbox: Any) -> None:
    sandbox.latency = 0.3
    users = 80
    cfg, db = _setup(tmp_path, database_url("sqlite", tmp_path), sandbox, workers=4,
                     batch_size=10)
    _fill(db, users, 1)
    d = Supervised(cfg, tmp_path / "run.log").start()
    try:
        d.wait_ready()
        first = d.children()
        assert wait_for(lambda: _counts(db)["success"] >= 10, timeout=30)
        with db.connection_context():
            held = {r for (r,) in MsgList.select(MsgList.id).where(
                (MsgList.status == "sending")
                & MsgList.claimed_by.contains(f":{first[1]}:")).tuples()}
        os.kill(first[1], signal.SIGKILL)
        assert wait_for(lambda: d.children()[1] != first[1], timeout=15), d.tail()
        assert wait_for(lambda: _counts(db)["success"] == users, timeout=90), (
            _counts(db), d.tail())
        assert first[0] == d.children()[0]  # the other one went on
        assert d.stop(signal.SIGTERM, timeout=30) == 0, d.tail()
    finally:
        d.close()
    assert "ended (killed by SIGKILL); starting it again" in d.text()
    assert held, "the kill hit no row in flight"
    with db.connection_context():
        recovered = {r for (r,) in MsgList.select(MsgList.id)
                     .where(MsgList.id.in_(list(held)) & (MsgList.status == "success"))
                     .tuples()}
    assert recovered == held  # sent after their lease ran out
    per_user = Counter(m["touser"] for m in sandbox.accepted)
    assert set(per_user) == {_openid(u) for u in range(users)}
    # only rows the dead process held 'sending' can have gone out twice
    assert sum(n - 1 for n in per_user.values()) <= len(held)
    assert sandbox.concurrency_violations() == 0


@pytest.mark.slow
def test_the_children_stop_when_their_supervisor_is_killed(tmp_path: Path,
                                                          sandbox: Any) -> None:
    """kill -9 of the supervisor (outside systemd nothing kills the rest): each child
    sees it is gone within a tick and stops as at SIGTERM, instead of sending on as an
    orphan beside the next supervisor's children."""
    sandbox.latency = 0.3  # sends in flight when the supervisor dies
    cfg, db = _setup(tmp_path, database_url("sqlite", tmp_path), sandbox, workers=2,
                     batch_size=4)
    _fill(db, 200, 1)
    d = Supervised(cfg, tmp_path / "run.log").start()
    kids: dict[int, int] = {}
    try:
        d.wait_ready()
        kids = d.children()
        assert len(kids) == 2
        assert wait_for(lambda: _counts(db)["success"] >= 2, timeout=30)
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait()
        assert wait_for(lambda: not any(_alive(p) for p in kids.values()), timeout=15), \
            d.tail()
    finally:
        d.close()
        for pid in kids.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert d.text().count("the supervising `herald run` is gone") == 2, d.tail()
    counts = _counts(db)
    assert counts["sending"] == 0, counts  # claims not sent went back to wait
    assert 0 < counts["success"] < 200 and counts["wait"] > 0, counts


@pytest.mark.slow
def test_sigterm_stops_every_process_within_the_bound(tmp_path: Path, sandbox: Any) -> None:
    sandbox.latency = 1.0  # sends in flight when the signal comes
    cfg, db = _setup(tmp_path, database_url("sqlite", tmp_path), sandbox)
    _fill(db, 200, 1)
    d = Supervised(cfg, tmp_path / "run.log").start()
    try:
        d.wait_ready()
        pids = list(d.children().values())
        assert wait_for(lambda: _counts(db)["success"] >= 5, timeout=30)
        t0 = time.monotonic()
        code = d.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - t0
    finally:
        d.close()
    assert code == 0, d.tail()
    assert took < 3 + 5  # http.timeout + 5 s
    assert not any(_alive(p) for p in pids)
    after = _counts(db)
    assert after["sending"] == 0, after  # every send recorded, the rest handed back
    assert sandbox.accepted_count() == after["success"]
    assert d.text().count("SIGTERM: stopping") == 2


@pytest.mark.slow
def test_sighup_reaches_every_process(tmp_path: Path, sandbox: Any) -> None:
    cfg, db = _setup(tmp_path, database_url("sqlite", tmp_path), sandbox)
    d = Supervised(cfg, tmp_path / "run.log").start()
    try:
        d.wait_ready()
        data = yaml.safe_load(cfg.read_text())
        data["retry"] = {"max_attempts": 7}
        data["jobs"]["purge"] = {"every": "2h"}  # a job process 1 does not run
        cfg.write_text(yaml.safe_dump(data))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: d.text().count("config reloaded from") == 2, timeout=20), (
            d.tail())
        assert "jobs.purge.every, retry.max_attempts changed" in d.text()
        assert d.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        d.close()


@pytest.mark.slow
def test_process_0_alone_serves_the_metrics_and_each_says_its_share(
        tmp_path: Path, sandbox: Any) -> None:
    """The metrics endpoint is process 0's (port 0: any free port, so a second listener
    would not fail, it would show in the log); each process names its share when up."""
    import requests

    cfg, db = _setup(tmp_path, database_url("sqlite", tmp_path), sandbox)
    data = yaml.safe_load(cfg.read_text())
    data["metrics"] = {"listen": "127.0.0.1:0"}
    cfg.write_text(yaml.safe_dump(data))
    d = Supervised(cfg, tmp_path / "run.log").start()
    try:
        d.wait_ready()
        served = re.findall(r"metrics on (http://\S+/metrics)", d.text())
        assert len(served) == 1, d.tail()
        assert "herald_" in requests.get(served[0], timeout=5).text
        # (each process says it just after its READY)
        assert wait_for(lambda: all(f"(dispatch process {k}/2)" in d.text() for k in (0, 1))
                        ), d.tail()
        assert d.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        d.close()


@pytest.mark.slow
def test_watchdog_reflects_the_children_and_a_hung_one_is_replaced(
        tmp_path: Path, sandbox: Any) -> None:
    """Under systemd's watchdog (a socket of the test's own, as systemd's): READY once
    both run, pings go on; a child that stops pinging (SIGSTOP) is killed and started
    again, and the pings to systemd go on."""
    cfg, db = _setup(tmp_path, database_url("sqlite", tmp_path), sandbox)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    got: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                got.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                return got

    env = clean_env(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="4000000")
    d = Supervised(cfg, tmp_path / "run.log", env=env).start()
    try:
        d.wait_ready()
        assert wait_for(lambda: "READY=1" in drain(), timeout=10)
        assert wait_for(lambda: "WATCHDOG=1" in drain(), timeout=10)
        first = d.children()
        os.kill(first[1], signal.SIGSTOP)
        assert wait_for(lambda: d.children().get(1) != first[1], timeout=20), d.tail()
        assert "sent no watchdog ping for 4 s (hung): killing it" in d.text()
        got.clear()
        assert wait_for(lambda: drain().count("WATCHDOG=1") >= 2, timeout=10)
        assert d.stop(signal.SIGTERM, timeout=30) == 0
        assert "STOPPING=1" in drain()
    finally:
        d.close()
        sock.close()


@pytest.mark.slow
def test_children_that_keep_dying_end_the_daemon_non_zero(tmp_path: Path, sandbox: Any
                                                           ) -> None:
    """A database that refuses every connection: each child start fails; after a few
    the supervisor stops and exits 1, for systemd to act on."""
    cfg = write_config(tmp_path, api_base=sandbox.url,
                       database="postgresql://nobody@127.0.0.1:1/none",
                       dispatch={"processes": 2})
    d = Supervised(cfg, tmp_path / "run.log").start()
    try:
        assert d.proc is not None
        code = d.proc.wait(timeout=120)
    finally:
        d.close()
    assert code == 1, d.tail()
    assert "the 5th time" in d.text()


def test_the_rate_limit_is_shared_between_the_processes(tmp_path: Path) -> None:
    """dispatch.rate_limit is the daemon's: each of its N processes starts at most 1/N."""
    from config import config_from_dict
    from runtime import process_rate
    from tests.support import config_data

    def rate(**dispatch: Any) -> float | None:
        data = config_data(folder=tmp_path, dispatch=dispatch)
        return process_rate(config_from_dict(data, base_dir=tmp_path, env={}))

    assert rate(rate_limit=10, processes=4) == 2.5
    assert rate(rate_limit=10) == 10
    assert rate(processes=3) is None


def test_only_process_0_runs_the_jobs_other_than_dispatch(db, sandbox, runtime_factory
                                                          ) -> None:
    from service.daemon import Daemon

    rt = runtime_factory(db, sandbox)
    every = {j.id for j in Daemon(rt).scheduler.get_jobs()}
    assert every == {"dispatch", "token_refresh", "stale_retry", "purge", "events"}
    other = Daemon(rt, only_dispatch=True)
    assert {j.id for j in other.scheduler.get_jobs()} == {"dispatch"}
    other.reschedule("purge", 5.0)  # a reload that changes another job's interval
