"""A MariaDB deadlock (1213) in a job is run again, not a failed job run.

The deadlock is a real one: another program's transaction holds row 2 and has changed
many rows (so InnoDB picks the job as the cheaper victim); stale_retry's locking read
takes row 1 and waits for row 2; then the program asks for row 1.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

import clock
from db.connection import init_schema
from db.models import MsgList
from tests.bound import connect
from tests.conftest import database_url, insert_sql, make_config
from tests.hostile_support import AppConnection
from tests.support import wait_for


@pytest.fixture
def maria(tmp_path: Path):
    url = database_url("mysql", tmp_path)
    db = connect(url)
    init_schema(db)
    yield url, db
    db.close()


def lock_waits(app: AppConnection) -> int:
    cur = app.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                      "WHERE trx_state = 'LOCK WAIT'")
    return int(cur.fetchone()[0])


def test_a_deadlocked_stale_retry_runs_again(maria, sandbox, tmp_path, caplog):
    from runtime import Runtime
    from service.daemon import Daemon

    url, db = maria
    past = (clock.now() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    later = (clock.now() - timedelta(minutes=4)).strftime("%Y-%m-%d %H:%M:%S")
    r1 = insert_sql(db, template="order_status", openid="o1", status="sending",
                    claimed_by="dead", lease_until=past, attempts=1)
    r2 = insert_sql(db, template="order_status", openid="o2", status="sending",
                    claimed_by="dead", lease_until=later, attempts=1)
    heavy = [insert_sql(db, template="order_status", openid=f"h{i}") for i in range(30)]
    rt = Runtime.build(make_config(url, sandbox.url, tmp_path), db)
    daemon = Daemon(rt)
    job = daemon.scheduler.get_job("stale_retry").func
    other = AppConnection("mysql", url)
    watcher = AppConnection("mysql", url)
    other.conn.autocommit(False)
    outcome: list[object] = []
    try:
        other.execute("SET SESSION innodb_lock_wait_timeout = 30")
        # one primary-key lookup per row, so it locks exactly the rows it changes (a
        # scan would lock row 1 too, and there would be no cycle)
        for rid in [*heavy, r2]:
            other.execute("UPDATE msg_list SET page = 'x' WHERE id = %s", (rid,))

        def run() -> None:
            try:
                outcome.append(job())
            except Exception as exc:  # noqa: BLE001 - the test reports it
                outcome.append(exc)

        with caplog.at_level(logging.WARNING):
            t = threading.Thread(target=run)
            t.start()
            # INNODB_TRX is a cache refreshed only after 0.1 s without a read: poll slower
            assert wait_for(lambda: lock_waits(watcher) == 1 or outcome, timeout=30,
                            step=0.25), outcome  # the job waits for row 2
            other.execute("UPDATE msg_list SET page = 'x' WHERE id = %s", (r1,))  # deadlock
            other.conn.commit()
            t.join(timeout=60)
        assert not t.is_alive()
    finally:
        other.close()
        watcher.close()
        daemon.pool.shutdown()
        rt.close()
    assert outcome and not isinstance(outcome[0], Exception), outcome
    assert outcome[0] == 2  # both stale rows recovered on the second go
    with db.connection_context():
        assert {r.status for r in MsgList.select().where(MsgList.id.in_([r1, r2]))} == {"wait"}
    assert "1213" in caplog.text or "deadlock" in caplog.text.lower()
    assert "job stale_retry failed" not in caplog.text
