"""`now` flows from dispatch.run's caller through the send path: a run told it is
another time claims, marks the send started, records and holds at that time, not at
the machine's (the send threads used to read clock.now() themselves)."""

from __future__ import annotations

from datetime import datetime, timedelta

import clock
from jobs import dispatch
from tests.conftest import insert_sql, row

GOOD = '["Flat white", 28, "shipped", "thanks"]'


def test_a_run_two_hours_in_the_future_sends_at_that_time(db, sandbox, runtime_factory):
    # on_stale: fail makes each send record that it started, from the send thread
    rt = runtime_factory(db, sandbox, dispatch={"on_stale": "fail", "workers": 2})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(3)]
    real = clock.now()
    offset = timedelta(hours=2)
    seen: list[datetime] = []

    def later() -> datetime:
        t = clock.now() + offset
        seen.append(t)
        return t

    assert dispatch.run(rt, now=later).sent == 3
    assert seen, "the run never asked its clock"
    for rid in ids:
        r = row(rid)
        assert r.status == "success"
        # started and sent at the run's time (two hours on), in that order
        assert real + offset <= r.started_at <= r.sent_at <= max(seen)
