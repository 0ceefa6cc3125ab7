"""What each engine must do for Herald: UTC instants, claims, reconnects, wake-ups.

Claim basics and round trips run on all three dialects (`any_db`); the session time
zone, concurrency and reconnect tests need a server (`server_db`); LISTEN/NOTIFY is
PostgreSQL's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pymysql
import pytest
from peewee import Database, InterfaceError, OperationalError

from db.claim import claim_batch, expire_overdue
from db.connection import dialect_of, init_schema, url_params
from db.dialects import dialect
from db.models import MsgList
from db.wakeup import PgWakeup
from tests.bound import connect
from tests.conftest import SERVER_URLS, database_url, insert_sql
from tests.hostile_support import claim_statements, explain

SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture(params=["postgres", "mysql"])
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db = connect(database_url(request.param, tmp_path))
    init_schema(db)
    yield db
    db.close()


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[Database]:
    db = connect(database_url("postgres", tmp_path))
    init_schema(db)
    yield db
    db.close()


def raw_connection(db: Database):
    """A driver connection of its own, as another application would have (autocommit)."""
    url = SERVER_URLS[dialect_of(db)]
    assert url
    params = url_params(url)
    name = params.pop("database")
    if dialect_of(db) == "postgres":
        conn = psycopg2.connect(dbname=name, **params)
        conn.autocommit = True
        return conn
    params["password"] = params.pop("passwd", params.get("password", ""))
    return pymysql.connect(database=name, autocommit=True, **params)


def fetch_one(conn, sql: str, params: tuple = ()):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def sql_ts(value: datetime) -> str:
    """A UTC instant as an application writes it in plain SQL (session zone UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def near_now(value: datetime, slack: float = 5.0) -> bool:
    return abs((value - datetime.now(UTC)).total_seconds()) < slack


def backend_id(db: Database) -> int:
    sql = "SELECT pg_backend_pid()" if dialect_of(db) == "postgres" else "SELECT CONNECTION_ID()"
    return db.execute_sql(sql).fetchone()[0]


# -- 2. UTC whatever the writer's session zone ----------------------------------------
PG_ZONES = [
    "SET TIME ZONE 'Asia/Shanghai'",
    "SET TIME ZONE INTERVAL '+08:00' HOUR TO MINUTE",
    # POSIX style: PostgreSQL reads '+08:00' as 8 hours WEST of UTC (UTC-8). Any zone
    # must work for defaults, so it is kept here as a second, opposite offset.
    "SET TIME ZONE '+08:00'",
]


@pytest.mark.parametrize("zone_sql", PG_ZONES, ids=["Asia/Shanghai", "interval+8", "posix+8"])
def test_postgres_default_times_are_utc_whatever_the_session_zone(pg_db, zone_sql):
    conn = raw_connection(pg_db)
    try:
        with conn.cursor() as cur:
            cur.execute(zone_sql)
            cur.execute("INSERT INTO msg_list (template, openid) VALUES ('t', 'o') RETURNING id")
            rid = cur.fetchone()[0]
    finally:
        conn.close()
    with pg_db.connection_context():
        row = MsgList.get_by_id(rid)
    for name in ("send_at", "created_at", "updated_at"):
        value = getattr(row, name)
        assert value.tzinfo is UTC and near_now(value), (name, value)


def test_postgres_local_literal_from_a_plus8_session_is_the_right_instant(pg_db):
    conn = raw_connection(pg_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'Asia/Shanghai'")
            cur.execute("INSERT INTO msg_list (template, openid, send_at, expire_at) VALUES "
                        "('t', 'o', '2030-01-01 08:00:00', '2030-01-01 10:30:00+08:00') "
                        "RETURNING id")
            rid = cur.fetchone()[0]
            # the same session reads its local time back
            cur.execute("SELECT send_at::text FROM msg_list WHERE id = %s", (rid,))
            assert cur.fetchone()[0] == "2030-01-01 08:00:00+08"
    finally:
        conn.close()
    with pg_db.connection_context():
        row = MsgList.get_by_id(rid)
    assert row.send_at == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    assert row.expire_at == datetime(2030, 1, 1, 2, 30, tzinfo=UTC)


def test_mysql_times_from_a_plus8_session_are_utc(tmp_path):
    db = connect(database_url("mysql", tmp_path))
    init_schema(db)
    conn = raw_connection(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+08:00'")
            cur.execute("INSERT INTO msg_list (template, openid) VALUES ('t', 'o')")
            default_id = cur.lastrowid
            cur.execute("INSERT INTO msg_list (template, openid, send_at) "
                        "VALUES ('t', 'o', '2030-01-01 08:00:00')")
            local_id = cur.lastrowid
            cur.execute("SELECT send_at FROM msg_list WHERE id = %s", (local_id,))
            assert cur.fetchone()[0] == datetime(2030, 1, 1, 8, 0)  # its own local time
    finally:
        conn.close()
    with db.connection_context():
        row = MsgList.get_by_id(default_id)
        for name in ("send_at", "created_at", "updated_at"):
            value = getattr(row, name)
            assert value.tzinfo is UTC and near_now(value), (name, value)
        assert MsgList.get_by_id(local_id).send_at == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
        # Herald's own session is UTC, and READ COMMITTED (see ReconnectingMySQL)
        assert db.execute_sql("SELECT @@session.time_zone").fetchone()[0] == "+00:00"
        try:
            level = db.execute_sql("SELECT @@session.transaction_isolation").fetchone()[0]
        except OperationalError:  # MariaDB before 11.1
            level = db.execute_sql("SELECT @@session.tx_isolation").fetchone()[0]
        assert level == "READ-COMMITTED"
    db.close()


@pytest.mark.parametrize("scheme", ["mysql://", "mysql+pool://"])
def test_mysql_connections_share_one_default_tls_context(tmp_path, scheme):
    """A plain mysql:// URL opens a connection per job run; PyMySQL built a new TLS
    context (the system CA store read again) for each, 22 of 25 ms of CPU, which kept
    an idle daemon over 1 % of a core. Herald's connections share one (pooled ones
    too, still kept by their pool: tests/test_pool_urls.py)."""
    url = database_url("mysql", tmp_path).replace("mysql://", scheme, 1)
    contexts = []
    for db in (connect(url), connect(url)):
        with db.connection_context():
            conn = db.connection()
            assert db.execute_sql("SELECT 1").fetchone()[0] == 1
            contexts.append(conn.ctx)
        db.close()
    assert contexts[0] is not None and contexts[0] is contexts[1]
    # a connection made by PyMySQL itself still builds its own
    plain = pymysql.connect(**{k: v for k, v in url_params(url).items()
                               if k in ("host", "port", "user", "password", "database")})
    try:
        assert plain.ctx is not contexts[0]
    finally:
        plain.close()


# -- 4. model round trips ----------------------------------------------------------------
def test_datetimes_and_msgid_round_trip(any_db):
    shanghai = datetime(2030, 5, 6, 20, 15, 30, 123456, tzinfo=SHANGHAI)
    whole = datetime(2030, 5, 6, 12, 15, 31, tzinfo=UTC)
    msgid = "3141592653589793238"  # 19 digits: more than a double holds exactly
    with any_db.connection_context():
        row = MsgList.create(template="t", openid="o", send_at=shanghai, created_at=whole,
                             updated_at=datetime(2030, 5, 6, 12, 0), msgid=msgid,
                             lease_until=whole)
        back = MsgList.get_by_id(row.id)
        assert back.send_at == shanghai and back.send_at.tzinfo is UTC
        assert back.send_at == datetime(2030, 5, 6, 12, 15, 30, 123456, tzinfo=UTC)
        assert back.created_at == whole and back.lease_until == whole
        assert back.updated_at == datetime(2030, 5, 6, 12, 0, tzinfo=UTC)  # naive is UTC
        assert back.msgid == msgid and isinstance(back.msgid, str)
        assert back.expire_at is None
        # comparisons in SQL agree with the instants
        at = MsgList.send_at
        assert MsgList.select().where(at == shanghai.astimezone(UTC)).count() == 1
        assert MsgList.select().where(at <= shanghai).count() == 1
        assert MsgList.select().where(at < shanghai - timedelta(microseconds=1)).count() == 0
        if dialect_of(any_db) == "sqlite":
            stored = any_db.execute_sql("SELECT send_at, created_at FROM msg_list").fetchone()
            assert stored == ("2030-05-06 12:15:30.123456", "2030-05-06 12:15:31.000000")


def test_sqlite_text_times_compare_with_current_timestamp_rows(tmp_path):
    db = connect(database_url("sqlite", tmp_path))
    init_schema(db)
    rid = insert_sql(db, template="t", openid="o")  # send_at = CURRENT_TIMESTAMP
    with db.connection_context():
        now = datetime.now(UTC) + timedelta(seconds=2)
        assert [r.id for r in claim_batch(db, daemon_id="d", now=now, lease=60,
                                          limit=5)] == [rid]
    db.close()


# -- 3. claims --------------------------------------------------------------------------
def add(db: Database, n: int = 1, **cols) -> list[int]:
    return [insert_sql(db, template="t", openid=f"o{i}", **cols) for i in range(n)]


def test_claim_order_and_what_is_claimed(any_db):
    now = datetime.now(UTC).replace(microsecond=0)
    t = sql_ts(now - timedelta(minutes=10))
    old_low = insert_sql(any_db, template="t", openid="a", send_at=t)
    new_high = insert_sql(any_db, template="t", openid="b", priority=5,
                          send_at=sql_ts(now - timedelta(minutes=5)))
    old_high = insert_sql(any_db, template="t", openid="c", priority=5, send_at=t)
    same_time = insert_sql(any_db, template="t", openid="d", send_at=t)
    future = insert_sql(any_db, template="t", openid="e", priority=9,
                        send_at=sql_ts(now + timedelta(minutes=1)))
    cancelled = insert_sql(any_db, template="t", openid="f", status="cancelled", send_at=t)
    done = insert_sql(any_db, template="t", openid="g", status="success", send_at=t)
    with any_db.connection_context():
        rows = claim_batch(any_db, daemon_id="d1", now=now, lease=300, limit=3)
        assert [r.id for r in rows] == [old_high, new_high, old_low]
        for r in rows:
            assert (r.status, r.claimed_by, r.attempts) == ("sending", "d1", 1)
            assert r.lease_until == now + timedelta(seconds=300)
            assert r.updated_at == now
        stored = MsgList.get_by_id(old_high)
        assert (stored.status, stored.claimed_by, stored.attempts) == ("sending", "d1", 1)
        assert stored.lease_until == now + timedelta(seconds=300)
        rest = claim_batch(any_db, daemon_id="d2", now=now, lease=300, limit=10)
        assert [r.id for r in rest] == [same_time]
        assert claim_batch(any_db, daemon_id="d2", now=now, lease=300, limit=10) == []
        for rid, status in ((future, "wait"), (cancelled, "cancelled"), (done, "success")):
            r = MsgList.get_by_id(rid)
            assert (r.status, r.attempts, r.claimed_by) == (status, 0, None), rid
        # once due, the future row is claimed, its attempts counted from 0
        later = claim_batch(any_db, daemon_id="d1", now=now + timedelta(minutes=2),
                            lease=60, limit=10)
        assert [(r.id, r.attempts) for r in later] == [(future, 1)]
        assert claim_batch(any_db, daemon_id="d1", now=now, lease=60, limit=0) == []


def test_expire_overdue_fails_only_waiting_expired_rows(any_db):
    now = datetime.now(UTC).replace(microsecond=0)
    past = sql_ts(now - timedelta(minutes=1))
    expired = insert_sql(any_db, template="t", openid="a", expire_at=past, send_at=past)
    fresh = insert_sql(any_db, template="t", openid="b",
                       expire_at=sql_ts(now + timedelta(hours=1)))
    sending = insert_sql(any_db, template="t", openid="c", expire_at=past, status="sending")
    with any_db.connection_context():
        assert expire_overdue(any_db, now=now) == 1
        assert MsgList.get_by_id(expired).status == "fail"
        assert "expired" in MsgList.get_by_id(expired).error
        assert MsgList.get_by_id(fresh).status == "wait"
        assert MsgList.get_by_id(sending).status == "sending"


def test_concurrent_claimers_never_share_a_row(any_db):
    ids = set(add(any_db, 120))
    now = datetime.now(UTC) + timedelta(seconds=5)
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        mine: list[int] = []
        try:
            with any_db.connection_context():  # one connection per thread, as the daemon
                while rows := claim_batch(any_db, daemon_id=name, now=now, lease=60, limit=7):
                    mine.extend(r.id for r in rows)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        got[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    claimed = [rid for mine in got.values() for rid in mine]
    assert len(claimed) == len(set(claimed)) == len(ids) and set(claimed) == ids
    with any_db.connection_context():
        assert {r.claimed_by for r in MsgList.select()} <= set(got)
        assert all(r.attempts == 1 for r in MsgList.select())


def _set_lock_timeout(db: Database) -> None:
    # a claim that waited would fail fast here instead of hanging the test
    if dialect_of(db) == "postgres":
        db.execute_sql("SET lock_timeout = '5s'")
    else:
        db.execute_sql("SET SESSION innodb_lock_wait_timeout = 5")


def test_claim_skips_rows_locked_by_another_connection(server_db):
    ids = add(server_db, 10, send_at="2020-01-01 00:00:00")
    now = datetime.now(UTC)
    other = raw_connection(server_db)
    try:
        with other.cursor() as cur:
            cur.execute("BEGIN")
            # one primary-key lookup per row: `id IN (...)` on a 10-row table may be a
            # full scan, which on InnoDB (REPEATABLE READ) locks every row it reads
            for rid in ids[:3]:
                cur.execute("SELECT id FROM msg_list WHERE id = %s FOR UPDATE", (rid,))
                assert cur.fetchone() == (rid,)
        _set_lock_timeout(server_db)
        started = time.monotonic()
        rows = claim_batch(server_db, daemon_id="d", now=now, lease=60, limit=5)
        assert time.monotonic() - started < 1.0
        assert [r.id for r in rows] == ids[3:8]
        with other.cursor() as cur:
            cur.execute("COMMIT")
        rows = claim_batch(server_db, daemon_id="d", now=now, lease=60, limit=10)
        assert [r.id for r in rows] == ids[:3] + ids[8:]
    finally:
        other.close()
        server_db.close()


def test_open_claim_transaction_does_not_block_another_claim(server_db):
    """Daemon A claims and holds its transaction open; daemon B claims meanwhile."""
    ids = add(server_db, 8, send_at="2020-01-01 00:00:00")
    now = datetime.now(UTC)
    claimed_a: list[int] = []
    a_holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def daemon_a() -> None:
        try:
            with server_db.connection_context(), server_db.atomic():
                # the claim's own transaction becomes a savepoint: locks stay held
                claimed_a.extend(r.id for r in claim_batch(
                    server_db, daemon_id="A", now=now, lease=60, limit=3))
                a_holding.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
            a_holding.set()

    th = threading.Thread(target=daemon_a)
    th.start()
    try:
        assert a_holding.wait(10) and not errors, errors
        assert claimed_a == ids[:3]
        _set_lock_timeout(server_db)
        started = time.monotonic()
        rows_b = claim_batch(server_db, daemon_id="B", now=now, lease=60, limit=3)
        assert time.monotonic() - started < 1.0
        assert [r.id for r in rows_b] == ids[3:6]
        # an application's INSERT does not wait for the open claims either
        app = raw_connection(server_db)
        try:
            with app.cursor() as cur:
                if dialect_of(server_db) == "mysql":
                    cur.execute("SET SESSION innodb_lock_wait_timeout = 5")
                started = time.monotonic()
                cur.execute("INSERT INTO msg_list (template, openid, send_at) "
                            "VALUES ('t', 'late', '2020-01-01 00:00:00')")
                assert time.monotonic() - started < 1.0
        finally:
            app.close()
    finally:
        release.set()
        th.join(10)
    assert not errors, errors
    rows = {r.id: r.claimed_by for r in MsgList.select()}
    assert [rows[i] for i in ids] == ["A"] * 3 + ["B"] * 3 + [None] * 2
    assert len(rows) == len(ids) + 1


@pytest.mark.parametrize("rows", [1, 250])
def test_postgres_claim_never_exceeds_its_limit(pg_db, rows):
    """The locking SELECT runs once (materialized CTE), whatever plan is chosen."""
    add(pg_db, rows, send_at="2020-01-01 00:00:00")
    pg_db.execute_sql("ANALYZE msg_list")
    now = datetime.now(UTC)
    for limit in (1, 2, 50):
        got = claim_batch(pg_db, daemon_id="d", now=now, lease=60, limit=limit)
        assert len(got) <= limit
    pg_db.close()


def test_claim_query_uses_the_claim_index(server_db):
    """EXPLAIN the statement claim_batch itself runs (Dialect.pick_sql inside it), not a
    query rebuilt here: a change to the claim's SQL is what this must catch."""
    add(server_db, 20, send_at="2020-01-01 00:00:00")
    d = dialect(server_db)
    if d.name == "postgres":
        server_db.execute_sql("SET enable_seqscan = off")  # a 20-row table would be scanned
    statements = claim_statements(server_db, daemon_id="d", now=datetime.now(UTC),
                                  lease=60, limit=5)
    pick = d.pick_sql()
    claims = [(sql, params) for sql, params in statements if pick in sql]
    assert len(claims) == 1, statements  # the claim runs pick_sql exactly once
    sql, params = claims[0]
    assert "SKIP LOCKED" in sql
    plan = explain(server_db, sql, params)
    if d.name == "postgres":
        # every row is due: the claim index gives the order, so no sort of the due rows
        assert "msg_list_claim" in plan and "Sort" not in plan, plan
    else:
        first = plan.splitlines()[0]
        assert "key=msg_list_claim" in first, plan
        assert "filesort" not in first, plan  # else every due row is locked
    server_db.close()


# -- 5. reconnects -------------------------------------------------------------------------
def kill(db: Database, target: int) -> None:
    conn = raw_connection(db)
    try:
        with conn.cursor() as cur:
            if dialect_of(db) == "postgres":
                cur.execute("SELECT pg_terminate_backend(%s)", (target,))
            else:
                cur.execute(f"KILL {int(target)}")
    finally:
        conn.close()
    time.sleep(0.2)  # let the server finish closing


def test_dropped_connection_costs_at_most_one_statement(server_db):
    add(server_db, 3)
    before = backend_id(server_db)
    kill(server_db, before)
    failures = 0
    for _ in range(3):
        try:
            assert server_db.execute_sql("SELECT count(*) FROM msg_list").fetchone()[0] == 3
        except (OperationalError, InterfaceError):
            failures += 1
    assert failures <= 1
    assert backend_id(server_db) != before
    # and a claim (a transaction) after a drop
    kill(server_db, backend_id(server_db))
    now = datetime.now(UTC) + timedelta(seconds=5)
    try:
        rows = claim_batch(server_db, daemon_id="d", now=now, lease=60, limit=1)
    except (OperationalError, InterfaceError):
        rows = claim_batch(server_db, daemon_id="d", now=now, lease=60, limit=1)
    assert len(rows) == 1
    server_db.close()


def test_drop_inside_a_transaction_fails_it_with_the_real_error_then_recovers(server_db):
    add(server_db, 2)
    now = datetime.now(UTC) + timedelta(seconds=5)
    with pytest.raises(OperationalError) as info, server_db.atomic():
        claim_batch(server_db, daemon_id="d", now=now, lease=60, limit=1)
        kill(server_db, backend_id(server_db))
        server_db.execute_sql("SELECT 1")
    # the server's reason, not the rollback's "connection already closed"
    assert "already closed" not in str(info.value)
    # the transaction died with the connection: nothing was claimed
    rows = claim_batch(server_db, daemon_id="d", now=now, lease=60, limit=5)
    assert len(rows) == 2 and all(r.attempts == 1 for r in rows)
    server_db.close()


# -- 6. LISTEN/NOTIFY wake-up --------------------------------------------------------------
class Calls:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.event = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.event.set()


@pytest.fixture
def wakeup(pg_db) -> Iterator[tuple[PgWakeup, Calls]]:
    calls = Calls()
    w = PgWakeup(SERVER_URLS["postgres"] or "", calls, debounce=0.2)
    w.start()
    assert w.wait_listening(5)
    yield w, calls
    w.stop()


def test_wakeup_fires_within_a_second_of_an_insert(pg_db, wakeup):
    w, calls = wakeup
    conn = raw_connection(pg_db)
    try:
        started = time.monotonic()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO msg_list (template, openid) VALUES ('t', 'o')")
        assert calls.event.wait(1.0)
        assert calls.times[0] - started < 1.0
    finally:
        conn.close()


def test_wakeup_debounces_a_burst(pg_db, wakeup):
    w, calls = wakeup
    conn = raw_connection(pg_db)
    try:
        started = time.monotonic()
        with conn.cursor() as cur:
            for i in range(100):  # 100 transactions, 100 notifications
                cur.execute("INSERT INTO msg_list (template, openid) VALUES ('t', %s)", (str(i),))
        burst = time.monotonic() - started
        time.sleep(0.5)  # the trailing call of the last window
    finally:
        conn.close()
    assert 1 <= len(calls.times) <= burst / 0.2 + 3, (len(calls.times), burst)
    assert len(calls.times) < 20
    gaps = [b - a for a, b in zip(calls.times, calls.times[1:], strict=False)]
    assert all(g >= 0.19 for g in gaps), gaps
    # the last notification was served, not dropped
    assert calls.times[-1] >= started + burst - 0.25


def test_wakeup_reconnects_after_the_server_drops_it(pg_db):
    calls = Calls()
    w = PgWakeup(SERVER_URLS["postgres"] or "", calls, debounce=0.1, backoff=(0.1, 1.0))
    w.start()
    try:
        assert w.wait_listening(5)
        first = w.backend_pid
        kill(pg_db, first)
        deadline = time.monotonic() + 5
        while (w.connects < 2 or not w.wait_listening(0)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.connects == 2 and w.backend_pid != first
        assert calls.event.wait(1)  # one catch-up call after reconnecting
        calls.event.clear()
        insert_sql(pg_db, template="t", openid="o")
        assert calls.event.wait(1.0)
    finally:
        w.stop()


def test_wakeup_stop_joins_promptly_and_survives_a_failing_callback(pg_db):
    def boom() -> None:
        raise RuntimeError("callback failed")

    w = PgWakeup(SERVER_URLS["postgres"] or "", boom, debounce=0.05)
    w.start()
    assert w.wait_listening(5)
    insert_sql(pg_db, template="t", openid="o")
    deadline = time.monotonic() + 2
    while w.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.calls == 1
    insert_sql(pg_db, template="t", openid="o")  # still listening after the failure
    deadline = time.monotonic() + 2
    while w.calls == 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.calls == 2
    thread = w._thread
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 1.5
    assert thread is not None and not thread.is_alive()


def test_wakeup_keeps_retrying_an_unreachable_server():
    w = PgWakeup("postgresql://postgres@127.0.0.1:9/none", lambda: None, backoff=(0.05, 0.2))
    w.start()
    time.sleep(0.5)
    assert not w.wait_listening(0) and w.connects == 0
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 1.5


def test_wakeup_is_for_postgres_only():
    with pytest.raises(ValueError):
        PgWakeup("mysql://root@127.0.0.1/test", lambda: None)
