"""jobs/purge.py: per-status retention on updated_at, batches, the queue never touched."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from db.models import MsgList
from jobs import purge
from tests.conftest import insert_sql, make_config

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def ts(dt: datetime) -> object:
    """A timestamp as the bound database takes it in plain SQL (text on SQLite)."""
    return MsgList.updated_at.db_value(dt)


def add(database, status: str, finished: datetime) -> int:
    return insert_sql(database, template="order_status", openid="oUser", status=status,
                      send_at=ts(finished - DAY), updated_at=ts(finished))


def runtime(database, url: str, tmp_path: Path, **retention: str) -> SimpleNamespace:
    """What purge needs of a Runtime, with a real validated Config."""
    cfg = make_config(url, "http://127.0.0.1:9", tmp_path, retention=retention)
    return SimpleNamespace(config=cfg, db=database, stopping=threading.Event())


def remaining() -> set[int]:
    return {r.id for r in MsgList.select(MsgList.id)}


def count_transactions(database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count db.atomic() blocks entered from now on."""
    entered: list[int] = []
    real = database.atomic

    @contextmanager
    def atomic(*args: Any, **kwargs: Any):
        entered.append(1)
        with real(*args, **kwargs) as txn:
            yield txn

    monkeypatch.setattr(database, "atomic", atomic)
    return entered


def test_each_status_has_its_own_retention(any_db, any_db_url, tmp_path) -> None:
    rt = runtime(any_db, any_db_url, tmp_path, success="30d", fail="90d", cancelled="7d")
    gone = {
        add(any_db, "success", NOW - 31 * DAY),
        add(any_db, "fail", NOW - 91 * DAY),
        add(any_db, "cancelled", NOW - 8 * DAY),
    }
    kept = {
        add(any_db, "success", NOW - 29 * DAY),
        add(any_db, "fail", NOW - 60 * DAY),  # older than success's 30d, younger than 90d
        add(any_db, "cancelled", NOW - 6 * DAY),
        add(any_db, "wait", NOW - 3650 * DAY),  # the queue itself, however old
        add(any_db, "sending", NOW - 3650 * DAY),
    }
    assert purge.run(rt, now=lambda: NOW) == {"success": 1, "fail": 1, "cancelled": 1}
    assert remaining() == kept
    assert not gone & remaining()
    # idempotent: a second run (another daemon's, or the next hour's) finds nothing
    assert purge.run(rt, now=lambda: NOW) == {"success": 0, "fail": 0, "cancelled": 0}
    assert remaining() == kept


def test_retention_is_measured_from_updated_at(db, db_url, tmp_path) -> None:
    rt = runtime(db, db_url, tmp_path, success="30d")
    # queued and due long ago, finished yesterday: kept
    young = insert_sql(db, template="t", openid="o", status="success",
                       send_at=ts(NOW - 400 * DAY), updated_at=ts(NOW - DAY))
    at_cutoff = add(db, "success", NOW - 30 * DAY)  # exactly 30d: not older, kept
    old = add(db, "success", NOW - 30 * DAY - timedelta(seconds=1))
    assert purge.run(rt, now=lambda: NOW)["success"] == 1
    assert remaining() == {young, at_cutoff}
    assert old not in remaining()


def test_wait_and_sending_rows_are_never_deleted(any_db, any_db_url, tmp_path) -> None:
    rt = runtime(any_db, any_db_url, tmp_path, success="1s", fail="1s", cancelled="1s")
    queue = {add(any_db, s, NOW - n * DAY) for s in ("wait", "sending") for n in (2, 10000)}
    assert purge.run(rt, now=lambda: NOW) == {"success": 0, "fail": 0, "cancelled": 0}
    assert remaining() == queue
    for status in ("wait", "sending", "bogus"):
        with pytest.raises(ValueError, match="only deletes finished rows"):
            purge.purge_status(any_db, status, NOW, batch=10)


def test_forever_keeps_that_status(db, db_url, tmp_path) -> None:
    rt = runtime(db, db_url, tmp_path, success="forever", fail="1d")
    ancient = add(db, "success", NOW - 36500 * DAY)
    add(db, "fail", NOW - 2 * DAY)
    assert purge.run(rt, now=lambda: NOW) == {"success": 0, "fail": 1, "cancelled": 0}
    assert remaining() == {ancient}


def test_batches_are_separate_transactions(any_db, any_db_url, tmp_path, monkeypatch) -> None:
    rt = runtime(any_db, any_db_url, tmp_path, success="30d")
    for i in range(10):
        add(any_db, "success", NOW - (40 + i) * DAY)
    young = add(any_db, "success", NOW - DAY)
    txns = count_transactions(any_db, monkeypatch)
    assert purge.run(rt, now=lambda: NOW, batch=3)["success"] == 10
    # success: 3 + 3 + 3 + 1 (short: done) = 4; fail and cancelled: one empty batch each;
    # then one for applied push_event rows and one for heartbeats gone a day
    assert len(txns) == 4 + 1 + 1 + 1 + 1
    assert remaining() == {young}


def test_purge_status_counts(any_db) -> None:
    for i in range(9):
        add(any_db, "fail", NOW - (100 + i) * DAY)
    # 9 rows in batches of 3: three full batches, then an empty one proves there are no more
    assert purge.purge_status(any_db, "fail", NOW - 90 * DAY, batch=3) == (9, 4)
    assert purge.purge_status(any_db, "fail", NOW - 90 * DAY, batch=3) == (0, 1)


def test_stopping_ends_the_purge_between_batches(db, db_url, tmp_path) -> None:
    rt = runtime(db, db_url, tmp_path, success="30d")
    for i in range(5):
        add(db, "success", NOW - (40 + i) * DAY)
    rt.stopping.set()
    assert purge.run(rt, now=lambda: NOW, batch=2) == {"success": 0, "fail": 0, "cancelled": 0}
    assert len(remaining()) == 5


def test_logs_one_info_line_only_when_something_was_deleted(db, db_url, tmp_path,
                                                          caplog) -> None:
    rt = runtime(db, db_url, tmp_path)
    caplog.set_level(logging.INFO, logger="herald.purge")
    add(db, "success", NOW - DAY)
    purge.run(rt, now=lambda: NOW)
    assert caplog.records == []
    add(db, "success", NOW - 31 * DAY)
    add(db, "fail", NOW - 91 * DAY)
    purge.run(rt, now=lambda: NOW)
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.levelname == "INFO"
    assert "deleted 2 finished rows (1 success, 1 fail, 0 cancelled)" in record.getMessage()


def test_runs_with_a_real_runtime(db, sandbox, runtime_factory) -> None:
    rt = runtime_factory(db, sandbox, retention={"cancelled": "1h"})
    add(db, "cancelled", NOW - timedelta(hours=2))
    keep = add(db, "cancelled", NOW - timedelta(minutes=30))
    assert purge.run(rt, now=lambda: NOW) == {"success": 0, "fail": 0, "cancelled": 1}
    assert remaining() == {keep}


def test_batch_must_be_positive(db, db_url, tmp_path) -> None:
    with pytest.raises(ValueError):
        purge.run(runtime(db, db_url, tmp_path), batch=0)
