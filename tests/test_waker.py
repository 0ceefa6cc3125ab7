"""db/waker.py: dispatch wakes when a row is inserted or falls due, on every engine.

The daemon tests run the real `scheduler.py run` with `jobs.dispatch.every: 3600s`: a
row sent at all was sent by a wake-up, not by the poll. They wait for conditions with
generous timeouts (the speed itself is measured by bench/latency.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from db.connection import init_schema
from db.dialects import dialect
from db.waker import Waker
from tests.bound import connect
from tests.conftest import database_url
from tests.support import DaemonProcess, SandboxProcess, wait_for, write_config

ENGINES = ["sqlite", "postgres", "mysql"]
NEVER = "3600s"  # the poll: a row sent during a test was woken for


class Calls:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.times.append(time.monotonic())

    def __len__(self) -> int:
        return len(self.times)


def fresh(engine: str, tmp_path: Path) -> tuple[str, Any]:
    url = database_url(engine, tmp_path)
    db = connect(url)
    init_schema(db)
    return url, db


def insert(db: Any, *, openid: str = "o", send_at: datetime | None = None) -> None:
    """An application's INSERT, on the test's own connection (not the waker's)."""
    d = dialect(db)
    cols = {"template": "order_status", "openid": openid,
            "params": '["Coffee", 12.5, "shipped", "thanks"]'}
    if send_at is not None:
        cols["send_at"] = d.ts(send_at)  # type: ignore[assignment]
    marks = ", ".join([d.param] * len(cols))
    with db.atomic():
        db.execute_sql(f"INSERT INTO msg_list ({', '.join(cols)}) VALUES ({marks})",
                       list(cols.values()))


@pytest.fixture(params=ENGINES)
def engine_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    url, db = fresh(request.param, tmp_path)
    with db.connection_context():
        yield url, db
    db.close()


@pytest.fixture
def started() -> Iterator[list[Waker]]:
    made: list[Waker] = []
    yield made
    for w in made:
        w.stop()


def start(made: list[Waker], url: str, calls: Calls, **kw: Any) -> Waker:
    w = Waker(url, calls, **kw)
    made.append(w)
    w.start()
    return w


# -- the waker on its own -------------------------------------------------------------
def test_an_insert_by_another_connection_wakes(engine_db, started):
    url, db = engine_db
    calls = Calls()
    w = start(started, url, calls)
    assert wait_for(lambda: w.probes >= 1, 10)  # its first look at the table
    n = w.probes
    w.ran(datetime.now(UTC))  # as after a dispatch run
    assert wait_for(lambda: w.probes > n, 10)  # it has read the table since
    before = len(calls)
    # due a minute before that run began (an application's clock, the time of the
    # event): only the insert itself can wake for it
    insert(db, send_at=datetime.now(UTC) - timedelta(minutes=1))
    assert wait_for(lambda: len(calls) > before, 10), "no wake-up after an insert"
    assert w.due_wakes == 0


def test_a_row_scheduled_ahead_wakes_at_its_due_time(engine_db, started):
    url, db = engine_db
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    insert(db, send_at=due)
    calls = Calls()
    w = start(started, url, calls)
    # a run that started now has seen nothing due: only the due time may wake
    w.ran(datetime.now(UTC))
    assert wait_for(lambda: w.due_wakes >= 1, 15), "not woken at the due time"
    assert datetime.now(UTC) >= due
    assert w.armed is None  # once; the next run's ran() arms it again


def test_a_row_the_last_run_left_does_not_wake_again(engine_db, started):
    """A row due before the last run began was seen by that run and left (held): waking
    for it again would spin dispatch. The poll looks at it again."""
    url, db = engine_db
    insert(db, send_at=datetime.now(UTC) - timedelta(seconds=30))
    calls = Calls()
    w = Waker(url, calls)
    w.ran(datetime.now(UTC))
    started.append(w)
    w.start()
    for _ in range(3):
        n = w.probes
        w.ran(datetime.now(UTC))
        assert wait_for(lambda n=n: w.probes > n, 10)
    assert len(calls) == 0 and w.due_wakes == 0


def test_a_burst_coalesces_and_its_last_change_is_served(tmp_path, started):
    url, db = fresh("sqlite", tmp_path)
    calls = Calls()
    w = start(started, url, calls, debounce=0.5, tick=0.05)
    assert wait_for(lambda: w.probes >= 1, 10)
    t0 = time.monotonic()
    with db.connection_context():
        for i in range(100):  # 100 single-row transactions over about a second
            final = time.monotonic()  # before the last insert: a call that serves it
            insert(db, openid=f"o{i}")  # comes after this (it may come before `last`)
            time.sleep(0.01)
    last = time.monotonic()
    assert wait_for(lambda: calls.times and calls.times[-1] >= final, 10), \
        "the change at the end of the burst was dropped"
    during = [t for t in calls.times if t <= last]
    assert len(during) <= (last - t0) / 0.5 + 2, calls.times
    gaps = [b - a for a, b in zip(calls.times, calls.times[1:], strict=False)]
    assert all(g >= 0.45 for g in gaps), gaps
    db.close()


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:9/none", "mysql://root@127.0.0.1:9/none", "sqlite-dir"])
def test_a_database_away_backs_off_without_spinning(url, tmp_path, started):
    if url == "sqlite-dir":
        url = f"sqlite:///{tmp_path}"  # a directory: every open fails
    calls = Calls()
    t0 = time.monotonic()
    w = start(started, url, calls, backoff=(0.05, 0.2))
    assert wait_for(lambda: len(w.retry_waits) >= 5, 20)
    assert w.retry_waits[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]
    # each failure waited its turn before the next try
    assert time.monotonic() - t0 >= sum(w.retry_waits[:4])
    assert w.failures >= 5 and len(calls) == 0
    thread = w._thread
    t1 = time.monotonic()
    w.stop()
    assert time.monotonic() - t1 < 2 and thread is not None and not thread.is_alive()


# -- the real daemon ----------------------------------------------------------------------
def daemon(tmp_path: Path, url: str, sb: SandboxProcess, **over: Any) -> DaemonProcess:
    jobs = {"dispatch": {"every": over.pop("every", NEVER)}}
    cfg = write_config(tmp_path, api_base=sb.url, database=url, jobs=jobs, **over)
    d = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    d.wait_ready(60)
    return d


def statuses(db: Any) -> dict[str, str]:
    return {o: s for o, s in db.execute_sql("SELECT openid, status FROM msg_list").fetchall()}


@pytest.fixture
def sandbox_proc(tmp_path: Path) -> Iterator[SandboxProcess]:
    with SandboxProcess(tmp_path) as sb:
        yield sb


def test_daemon_sends_an_insert_and_a_scheduled_row_long_before_its_poll(
        engine_db, sandbox_proc, tmp_path):
    url, db = engine_db
    d = daemon(tmp_path, url, sandbox_proc)
    try:
        insert(db, openid="oNow")
        assert wait_for(lambda: statuses(db).get("oNow") == "success", 30), d.tail()
        # written by a program whose clock is behind, or back-dated: due before the
        # last run began, so only the insert can wake for it
        insert(db, openid="oPast", send_at=datetime.now(UTC) - timedelta(minutes=1))
        assert wait_for(lambda: statuses(db).get("oPast") == "success", 30), d.tail()
        due = datetime.now(UTC) + timedelta(seconds=2)
        insert(db, openid="oLater", send_at=due)
        assert wait_for(lambda: statuses(db).get("oLater") == "success", 30), d.tail()
        sent_at = db.execute_sql("SELECT sent_at FROM msg_list WHERE openid = 'oLater'"
                                 ).fetchone()[0]
        from db.models import parse_utc
        assert parse_utc(sent_at) >= due  # not early
    finally:
        assert d.stop() == 0
        d.close()


def test_daemon_wakes_for_a_row_put_back_after_a_back_off(engine_db, tmp_path, sandbox_proc):
    """A failed send goes back to wait with send_at = now + back-off; the run's end reads
    that due time, and the retry goes out then, not at the poll."""
    url, db = engine_db
    sandbox_proc.call("POST", "inject", {"fault": "http_502", "times": 1})
    d = daemon(tmp_path, url, sandbox_proc,
               retry={"backoff": {"base": "1s", "jitter": 0}})
    try:
        insert(db, openid="oRetry")
        assert wait_for(lambda: statuses(db).get("oRetry") == "success", 30), d.tail()
        attempts = db.execute_sql("SELECT attempts FROM msg_list").fetchone()[0]
        assert attempts == 2
    finally:
        assert d.stop() == 0
        d.close()


def test_daemon_without_the_waker_still_sends_at_its_poll(tmp_path, sandbox_proc):
    url, db = fresh("sqlite", tmp_path)
    d = daemon(tmp_path, url, sandbox_proc, every="1s", dispatch={"wake": False})
    try:
        with db.connection_context():
            insert(db, openid="oPoll")
            assert wait_for(lambda: statuses(db).get("oPoll") == "success", 30), d.tail()
    finally:
        assert d.stop() == 0
        d.close()
        db.close()
