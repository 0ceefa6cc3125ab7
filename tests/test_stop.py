"""A prompt stop: SIGTERM ends a real daemon within http.timeout + 5 s whatever the rate
limit, workers and backlog; no send starts after the stop is asked (the sandbox counts
what arrives after the signal); the rows it claimed but did not send go back to wait
with their attempt refunded."""

from __future__ import annotations

import signal
import time

import pytest

from db.connection import init_schema
from db.models import MsgList
from tests.bound import connect
from tests.conftest import insert_sql
from tests.support import DaemonProcess, wait_for, write_config

pytestmark = pytest.mark.slow
GOOD = '["Tea", 3, "shipped", "ok"]'
TIMEOUT = 2.0  # http.timeout of the test config


def _statuses(db) -> dict[str, list[MsgList]]:
    out: dict[str, list[MsgList]] = {}
    with db.connection_context():
        for r in MsgList.select():
            out.setdefault(r.status, []).append(r)
    return out


@pytest.mark.parametrize(("rate", "workers", "latency"), [
    (0.5, 16, 0.0),   # the case: 16 sends queued in the rate limit
    (0.5, 64, 0.0),   # more workers than systemd's TimeoutStopSec would wait for
    (None, 16, 1.5),  # no rate limit, every worker inside a slow WeChat call
])
def test_sigterm_ends_within_the_timeout_and_starts_no_send(tmp_path, sandbox, rate,
                                                           workers, latency):
    sandbox.latency = latency
    cfg = write_config(tmp_path, api_base=sandbox.url, http={"timeout": f"{TIMEOUT}s"},
                       dispatch={"rate_limit": rate, "workers": workers},
                       jobs={"dispatch": {"every": "1s"}})
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    rows = 200
    with db.connection_context(), db.atomic():
        for i in range(rows):
            insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        # a few sends went out and the rest of the backlog is claimed and queued
        assert wait_for(lambda: len(sandbox.received) >= 2, 30), daemon.tail()
        if rate:
            # right after an arrival: the next one is 1/rate s away, so any arrival
            # after the signal is a send that started after it
            seen = len(sandbox.received)
            assert wait_for(lambda: len(sandbox.received) > seen, 10), daemon.tail()
        assert daemon.proc is not None
        asked = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=60)
        took = time.monotonic() - asked
    finally:
        daemon.close()
    # (the sandbox runs in this process: its arrival times are on this clock) Under a
    # rate limit the signal came right after an arrival, so nothing may arrive after
    # it; without one, a request that started a moment before the signal may still be
    # on its way
    grace = 0.0 if rate else 0.1
    late = [r for r in sandbox.received if r["at"] > asked + grace]
    log = daemon.text()
    print(f"\nrate {rate}, workers {workers}: stopped in {took:.2f} s, {len(late)} sends "
          "after the signal")
    assert code == 0, log[-3000:]
    assert took <= TIMEOUT + 5, f"stop took {took:.1f} s, {len(late)} sends after the signal"
    assert late == [], f"{len(late)} sends started after the stop was asked"
    by_status = _statuses(db)
    assert "sending" not in by_status  # every claimed row was recorded or handed back
    sent = by_status.get("success", [])
    assert len(sent) == len(sandbox.accepted)
    waiting = by_status.get("wait", [])
    assert len(sent) + len(waiting) == rows
    assert all(r.attempts == 0 and r.claimed_by is None for r in waiting)
    assert "herald stopped" in log
