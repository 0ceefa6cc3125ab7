"""Schema version 3, SQLite's claim index: it holds waiting rows only. A database the
previous release (version 2, tests/fixtures/schema_v2) made, and one an earlier build of
version 3 made (already marked 3, with the index over every row), both end with the
partial index, its rows kept, the claim still served by it; twice is harmless."""

from __future__ import annotations

import clock
from db.claim import claim_batch
from db.schema import init_schema, split_statements, state
from tests.bound import connect
from tests.conftest import ROOT, insert_sql

V2 = ROOT / "tests" / "fixtures" / "schema_v2"
OLD_INDEX = "CREATE INDEX msg_list_claim ON msg_list (status, priority DESC, send_at, id)"


def _claim_index_sql(db) -> str:
    with db.connection_context():
        row = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'index' "
                             "AND name = 'msg_list_claim'").fetchone()
    assert row is not None, "msg_list_claim is missing"
    return " ".join(str(row[0]).split())


def _assert_partial_and_used(db, waiting: int) -> None:
    assert "WHERE status = 'wait'" in _claim_index_sql(db)
    with db.connection_context():
        plan = " ".join(str(r) for r in db.execute_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM msg_list WHERE status = 'wait' AND "
            "send_at <= ? ORDER BY priority DESC, send_at, id LIMIT 5",
            ("2999-01-01 00:00:00",)).fetchall())
        assert "msg_list_claim" in plan and "TEMP B-TREE" not in plan, plan
        n = db.execute_sql("SELECT COUNT(*) FROM msg_list INDEXED BY msg_list_claim "
                           "WHERE status = 'wait'").fetchone()[0]
    assert n == waiting
    rows = claim_batch(db, daemon_id="d", now=clock.now(), lease=60, limit=waiting + 5)
    assert len(rows) == waiting


def test_a_version_2_database_gets_the_partial_claim_index(tmp_path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'v2.db'}")
    with db.connection_context():
        for stmt in split_statements((V2 / "sqlite.sql").read_text()):
            db.execute_sql(stmt)
        db.execute_sql("INSERT INTO herald_schema (version, description) VALUES (2, 'v2')")
    assert "WHERE" not in _claim_index_sql(db)
    for i in range(3):
        insert_sql(db, template="order_status", openid=f"o{i}")
    assert init_schema(db) == [3]
    assert init_schema(db) == []
    _assert_partial_and_used(db, waiting=3)
    db.close()


def test_an_earlier_version_3_database_gets_it_too(tmp_path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'v3.db'}")
    init_schema(db)
    with db.connection_context():
        db.execute_sql("DROP INDEX msg_list_claim")
        db.execute_sql(OLD_INDEX)  # what main's version 3 created
    assert state(db).version == 3 and "WHERE" not in _claim_index_sql(db)
    for i in range(4):
        insert_sql(db, template="order_status", openid=f"o{i}")
    assert init_schema(db) == []
    init_schema(db)
    _assert_partial_and_used(db, waiting=4)
    db.close()


def test_a_start_replaces_it_on_a_database_already_marked_3(tmp_path) -> None:
    """run and serve upgrade through ensure_current, which skips a current database:
    a full claim index still counts as work to do."""
    from db.schema import ensure_current

    db = connect(f"sqlite:///{tmp_path / 'v3.db'}")
    init_schema(db)
    assert ensure_current(db) == ""
    with db.connection_context():
        db.execute_sql("DROP INDEX msg_list_claim")
        db.execute_sql(OLD_INDEX)
    insert_sql(db, template="order_status", openid="o1")
    assert "partial" in ensure_current(db)
    assert ensure_current(db) == ""
    _assert_partial_and_used(db, waiting=1)
    db.close()
