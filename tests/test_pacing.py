"""Even pacing: `dispatch.rate_limit: N` spreads the starts about 1/N s apart, so WeChat
(the sandbox, counting arrival times) sees at most N + N/4 requests in any one-second
window, with no burst at each second's start; and never more than N starts of Herald's
own in any window (ratelimit.py's contract)."""

from __future__ import annotations

import pytest

from db.connection import init_schema
from db.models import MsgList
from tests.bound import connect
from tests.conftest import insert_sql
from tests.support import DaemonProcess, wait_for, write_config

GOOD = '["Tea", 3, "shipped", "ok"]'


def most_in_a_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of `times` in any half-open window [t, t + window)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("workers", [16, 64])
def test_rate_20_arrives_evenly_at_wechat(tmp_path, sandbox, workers):
    rate, rows = 20, 200
    cfg = write_config(tmp_path, api_base=sandbox.url,
                       dispatch={"rate_limit": rate, "workers": workers},
                       jobs={"dispatch": {"every": "1s"}})
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    with db.connection_context(), db.atomic():
        for i in range(rows):
            insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
    daemon = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    try:
        daemon.wait_ready()
        assert wait_for(lambda: len(sandbox.received) >= rows, 60), daemon.tail()
        assert daemon.stop() == 0, daemon.tail()
    finally:
        daemon.close()
    arrivals = sorted(r["at"] for r in sandbox.received)
    worst = most_in_a_window(arrivals)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # no burst: the 20 sends of a second are not bunched at its start
    bunched = most_in_a_window(arrivals, 0.25)
    print(f"\nworkers {workers}: most arrivals in 1 s {worst}, in 0.25 s {bunched}, "
          f"span {arrivals[-1] - arrivals[0]:.2f} s, smallest gap {min(gaps) * 1000:.1f} ms")
    assert worst <= rate + rate // 4
    assert bunched <= rate // 2  # a burst put all 20 in the first 30 ms
    with db.connection_context():
        assert MsgList.select().where(MsgList.status == "success").count() == rows
    # the whole backlog took about rows / rate seconds: pacing costs no throughput
    assert arrivals[-1] - arrivals[0] < rows / rate * 1.25
