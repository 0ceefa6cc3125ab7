"""What each Dialect writes where engines differ, run on every engine: the grant upsert
(ON CONFLICT ... DO UPDATE / ON DUPLICATE KEY UPDATE), the inbox page that skips the
events another daemon holds, and the row lock a hold's lift takes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from db import inbox
from db.dialects import dialect
from db.grants import record_grant
from db.outcomes import upsert_grant
from tests.bound import connect

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _ledger(db) -> list[tuple]:
    return [tuple(r) for r in db.execute_sql(
        "SELECT app, openid, template_id, balance, status FROM subscribe_grant "
        "ORDER BY template_id").fetchall()]


def test_grant_upsert_adds_to_the_row_it_meets(any_db):
    """An accept adds one to the stored balance (a new entry starts at 1); a reject of a
    template never granted makes an entry with no balance; an accept after it counts
    from nothing and sets the status back; a balance written without a status keeps
    the stored one."""
    with any_db.atomic():
        record_grant(any_db, "default", "o1", "T1", "accept", NOW)
        record_grant(any_db, "default", "o1", "T1", "accept", NOW + timedelta(seconds=1))
        record_grant(any_db, "default", "o1", "T2", "reject", NOW)
        record_grant(any_db, "default", "o1", "T2", "accept", NOW + timedelta(seconds=2))
        record_grant(any_db, "default", "o1", "T3", "ban", NOW)
        # WeChat said "no grant left" (43101): the balance is 0, the status stays what
        # it was (a ban stays a ban); an entry not seen before starts accepted
        d = dialect(any_db)
        for tid in ("T3", "T4"):
            upsert_grant(d, any_db.cursor(), "default", "o1", tid, balance=0, status=None,
                         stamp=d.ts(NOW))
    assert _ledger(any_db) == [("default", "o1", "T1", 2, "accept"),
                               ("default", "o1", "T2", 1, "accept"),
                               ("default", "o1", "T3", 0, "ban"),
                               ("default", "o1", "T4", 0, "accept")]


def _store_events(db, n: int) -> None:
    d = dialect(db)
    with db.atomic():
        d.insert_many(db.cursor(), "push_event",
                      ("app", "source", "kind", "openid", "dedup_key", "payload",
                       "received_at"),
                      [("default", "app", "other", f"o{i}", f"k{i}", "{}", d.ts(NOW))
                       for i in range(n)])


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_an_inbox_page_skips_the_events_another_daemon_holds(engine, tmp_path):
    """Two daemons reading the inbox at once get disjoint pages: the first page's rows
    stay locked until its transaction ends, the second reader passes over them."""
    from tests.conftest import database_url

    url = database_url(engine, tmp_path)
    first, second = connect(url), connect(url)
    try:
        from db.schema import init_schema

        init_schema(first)
        _store_events(first, 6)
        got: list[int] = []
        with first.atomic():
            mine = [r[0] for r in inbox.unapplied(first, now=NOW, limit=3, due=False)]

            def other() -> None:  # another daemon, on its own connection and thread
                with second.connection_context(), second.atomic():
                    got.extend(r[0] for r in inbox.unapplied(second, now=NOW, limit=3,
                                                            due=False))

            t = threading.Thread(target=other)
            t.start()
            t.join(30)
            assert not t.is_alive(), "the second reader waited for the first one's locks"
        assert len(mine) == 3 and len(got) == 3
        assert not set(mine) & set(got)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_lock_rows_holds_a_row_until_the_transaction_ends(engine, tmp_path):
    """What a hold's lift selects with Dialect.lock_rows is locked: another writer that
    wants the same row waits (and here gives up at its lock timeout)."""
    from tests.conftest import database_url

    url = database_url(engine, tmp_path)
    first, second = connect(url), connect(url)
    try:
        from db.schema import init_schema

        init_schema(first)
        d = dialect(first)
        p = d.param
        first.execute_sql(f"INSERT INTO msg_list (template, openid, send_at) "
                          f"VALUES ({p}, {p}, {p})", ("t", "o", d.ts(NOW)))
        outcome: list[str] = []
        with first.atomic():
            first.execute_sql(f"SELECT id FROM msg_list WHERE openid = {p}{d.lock_rows}",
                              ("o",)).fetchall()

            def other() -> None:
                with second.connection_context():
                    short = ("SET lock_timeout = '1s'" if engine == "postgres"
                             else "SET SESSION innodb_lock_wait_timeout = 1")
                    second.execute_sql(short)
                    try:
                        with second.atomic():
                            second.execute_sql(f"UPDATE msg_list SET priority = 5 WHERE "
                                               f"openid = {p}", ("o",))
                        outcome.append("changed")
                    except Exception as exc:  # noqa: BLE001 - the lock timeout
                        outcome.append(type(exc).__name__)

            t = threading.Thread(target=other)
            t.start()
            t.join(30)
        assert outcome and outcome != ["changed"]
    finally:
        first.close()
        second.close()
