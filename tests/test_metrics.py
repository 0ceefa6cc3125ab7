"""metrics.py: the endpoint over real HTTP, values computed at scrape, no leaked connections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from db.models import MsgList
from metrics import OTHER, Metrics, QueueCollector, start_server, stop_server
from tests.conftest import insert_sql

Samples = dict[str, list[tuple[dict[str, str], float]]]


def ts(dt: datetime) -> object:
    """A timestamp as the bound database wants it in plain SQL (text on SQLite)."""
    return MsgList.send_at.db_value(dt)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    matches = [v for lab, v in samples.get(name, []) if lab == labels]
    assert len(matches) == 1, f"{name}{labels}: {samples.get(name)}"
    return matches[0]


@pytest.fixture
def serve() -> Iterator[Callable[[Metrics], Callable[[], Samples]]]:
    """Start the real endpoint for a Metrics on 127.0.0.1, port 0; scrape() parses it."""
    servers = []

    def start(metrics: Metrics) -> Callable[[], Samples]:
        server, thread = start_server(metrics, "127.0.0.1", 0)
        servers.append((server, thread))
        url = f"http://127.0.0.1:{server.server_port}/metrics"

        def scrape() -> Samples:
            resp = requests.get(url, timeout=5)
            assert resp.status_code == 200
            return parse(resp.text)

        return scrape

    yield start
    for server, thread in servers:
        stop_server(server, thread)


def _fill_queue(database, now: datetime) -> None:
    def add(status: str, send_at: datetime) -> None:
        insert_sql(database, template="order_status", openid=f"o{status}", status=status,
                   send_at=ts(send_at))

    add("wait", now - timedelta(seconds=100))  # the oldest due row
    add("wait", now - timedelta(seconds=50))
    add("wait", now - timedelta(seconds=10))
    add("wait", now + timedelta(hours=1))  # scheduled: waiting but not backlog
    add("sending", now - timedelta(days=3))  # older, but not waiting
    add("success", now - timedelta(days=9))
    add("success", now - timedelta(days=8))
    add("fail", now - timedelta(days=7))


def test_queue_depth_and_oldest_waiting_over_http(any_db, serve) -> None:
    _fill_queue(any_db, datetime.now(UTC))
    scrape = serve(Metrics(db=any_db))
    samples = scrape()
    counts = {lab["status"]: v for lab, v in samples["herald_queue_rows"]}
    assert counts == {"wait": 4, "sending": 1, "success": 2, "fail": 1, "cancelled": 0}
    # real time on both sides: the scrape happens a moment after the insert
    assert 99.0 <= value(samples, "herald_oldest_waiting_seconds") <= 110.0
    assert value(samples, "herald_database_up") == 1
    # computed at each scrape: a change by another program shows at once
    any_db.execute_sql("UPDATE msg_list SET status = 'cancelled' WHERE status = 'wait'")
    samples = scrape()
    counts = {lab["status"]: v for lab, v in samples["herald_queue_rows"]}
    assert counts == {"wait": 0, "sending": 1, "success": 2, "fail": 1, "cancelled": 4}
    assert value(samples, "herald_oldest_waiting_seconds") == 0


def test_empty_queue_reports_all_statuses_and_zero_age(db, serve) -> None:
    samples = serve(Metrics(db=db))()
    assert {lab["status"]: v for lab, v in samples["herald_queue_rows"]} == {
        "wait": 0, "sending": 0, "success": 0, "fail": 0, "cancelled": 0}
    assert value(samples, "herald_oldest_waiting_seconds") == 0


def test_oldest_waiting_with_a_controlled_clock(db) -> None:
    now = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    _fill_queue(db, now)
    collector = QueueCollector(db, now=lambda: now + timedelta(seconds=20))
    families = {f.name: f for f in collector.collect()}
    assert families["herald_oldest_waiting_seconds"].samples[0].value == 120.0


def test_counters_and_histograms(serve) -> None:
    m = Metrics()
    scrape = serve(m)
    m.finished("order_status", "success", 0)
    m.finished("order_status", "success", 0)
    m.finished("order_status", "fail", 43101)
    m.finished("order_status", "wait", None)  # put back for retry, no errcode (timeout)
    m.finished("welcome", "fail", None)
    m.finished("welcome", "success", 0, 5)  # a written group of five alike rows
    for seconds in (0.005, 0.03, 0.2, 0.2, 7.0, 30.0):
        m.send_duration(seconds)
    m.job_run("dispatch", 1.5, ok=True)
    m.job_run("dispatch", 0.2, ok=True)
    m.job_run("purge", 0.01, ok=False)
    s = scrape()
    name = "herald_messages_finished_total"
    assert value(s, name, template="order_status", status="success", errcode="0") == 2
    assert value(s, name, template="order_status", status="fail", errcode="43101") == 1
    assert value(s, name, template="order_status", status="wait", errcode="") == 1
    assert value(s, name, template="welcome", status="fail", errcode="") == 1
    assert value(s, name, template="welcome", status="success", errcode="0") == 5

    assert value(s, "herald_send_duration_seconds_count") == 6
    assert value(s, "herald_send_duration_seconds_sum") == pytest.approx(37.435)
    bucket = "herald_send_duration_seconds_bucket"
    assert value(s, bucket, le="0.01") == 1
    assert value(s, bucket, le="0.05") == 2
    assert value(s, bucket, le="0.25") == 4
    assert value(s, bucket, le="10.0") == 5
    assert value(s, bucket, le="+Inf") == 6

    assert value(s, "herald_job_runs_total", job="dispatch", outcome="ok") == 2
    assert value(s, "herald_job_runs_total", job="purge", outcome="error") == 1
    assert value(s, "herald_job_duration_seconds_count", job="dispatch") == 2
    assert value(s, "herald_job_duration_seconds_sum", job="dispatch") == pytest.approx(1.7)
    assert value(s, "herald_job_duration_seconds_count", job="purge") == 1
    last = dict((lab["job"], v) for lab, v in s["herald_job_last_success_timestamp_seconds"])
    assert set(last) == {"dispatch"}  # purge never succeeded
    assert abs(last["dispatch"] - datetime.now(UTC).timestamp()) < 60
    assert not [n for n in s if n.endswith("_created")]
    # no database given: no queue series at all (rather than a failing query)
    assert "herald_queue_rows" not in s


def test_token_expiry_from_the_callable(serve) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    tokens = {"default": now + timedelta(seconds=3600), "shop": None,
              "old": now - timedelta(seconds=5)}
    calls = []

    def source() -> dict[str, datetime | None]:
        calls.append(1)
        return tokens

    scrape = serve(Metrics(token_expiry=source, now=lambda: now))
    assert calls == []  # nothing read at registration
    s = scrape()
    assert value(s, "herald_token_expiry_seconds", app="default") == 3600
    assert value(s, "herald_token_expiry_seconds", app="shop") == 0  # no token held
    assert value(s, "herald_token_expiry_seconds", app="old") == 0  # expired
    tokens["shop"] = now + timedelta(seconds=7200)
    assert value(scrape(), "herald_token_expiry_seconds", app="shop") == 7200


def test_a_failing_source_does_not_fail_the_scrape(db, serve, caplog) -> None:
    def broken() -> dict[str, datetime | None]:
        raise RuntimeError("token cache gone")

    m = Metrics(db=db, token_expiry=broken)
    m.finished("t", "success", 0)
    scrape = serve(m)
    db.execute_sql("DROP TABLE msg_list")  # the database cannot answer the queue queries
    s = scrape()
    assert value(s, "herald_database_up") == 0
    assert "herald_queue_rows" not in s
    assert "herald_token_expiry_seconds" not in s
    assert value(s, "herald_messages_finished_total", template="t", status="success",
                 errcode="0") == 1
    assert "cannot read the queue" in caplog.text


def test_template_label_cardinality_is_capped() -> None:
    m = Metrics(max_templates=2)
    for name in ("a", "b", "c", "d", "a"):
        m.finished(name, "fail", 40037)
    s = parse_registry(m)
    got = {lab["template"]: v for lab, v in s["herald_messages_finished_total"]}
    assert got == {"a": 2, "b": 1, OTHER: 2}


def test_several_instances_do_not_clash(db) -> None:
    first, second = Metrics(db=db), Metrics(db=db)
    first.finished("t", "success", 0)
    assert "herald_messages_finished_total" in parse_registry(first)
    assert "herald_messages_finished_total" not in parse_registry(second)


def parse_registry(m: Metrics) -> Samples:
    from prometheus_client import generate_latest

    return parse(generate_latest(m.registry).decode())


def _track_connections(database) -> list[sqlite3.Connection]:
    """Record every raw connection the database opens from now on."""
    opened: list[sqlite3.Connection] = []
    real = database._connect

    def connect() -> sqlite3.Connection:
        conn = real()
        opened.append(conn)
        return conn

    database._connect = connect
    return opened


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
        return True
    return False


def test_scrapes_do_not_leak_connections(db, serve) -> None:
    """Each scrape runs on a new thread; each must close the connection it opened.

    Counting a server's connections works only on PostgreSQL/MySQL, so this records
    the raw sqlite3 connections peewee opens and proves every one of them closed.
    """
    insert_sql(db, template="t", openid="o1")
    opened = _track_connections(db)
    scrape = serve(Metrics(db=db))
    for _ in range(5):
        assert value(scrape(), "herald_queue_rows", status="wait") == 1
    threads = [threading.Thread(target=scrape) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 10  # one per scrape: nothing reused across threads
    assert all(_is_closed(c) for c in opened)


def test_collect_in_threads_closes_each_threads_connection(db) -> None:
    collector = QueueCollector(db)
    results: list[tuple[bool, bool, float]] = []

    def work() -> None:
        before = db.is_closed()
        families = {f.name: f for f in collector.collect()}
        results.append((before, db.is_closed(),
                        families["herald_database_up"].samples[0].value))

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(True, True, 1.0)] * 5


def test_collect_leaves_a_callers_open_connection_open(db) -> None:
    db.connect(reuse_if_open=True)
    list(QueueCollector(db).collect())
    assert not db.is_closed()


def test_build_info_process_metrics_and_reload_failures(serve) -> None:
    from version import __version__

    failures = [0]
    scrape = serve(Metrics(reload_failures=lambda: failures[0]))
    samples = scrape()
    assert value(samples, "herald_build_info", version=__version__) == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") >= 0
    assert value(samples, "process_open_fds") > 0
    assert "python_info" in samples
    assert value(samples, "herald_template_reload_failures_total") == 0
    failures[0] = 2
    assert value(scrape(), "herald_template_reload_failures_total") == 2


def test_reload_failures_count_refused_edits(tmp_path) -> None:
    from templates import TemplateHolder
    from tests.conftest import ROOT

    path = tmp_path / "templates.yaml"
    path.write_text((ROOT / "templates.yaml").read_text())
    holder = TemplateHolder(path)
    metrics = Metrics(reload_failures=lambda: holder.failures)
    path.write_text("broken: [")
    assert holder.reload() is False
    samples = parse(__import__("prometheus_client").generate_latest(metrics.registry).decode())
    assert value(samples, "herald_template_reload_failures_total") == 1


def test_quota_holds_one_series_per_hold_in_force_and_none_after(any_db, serve) -> None:
    from db import holds

    scrape = serve(Metrics(db=any_db))
    assert "herald_quota_holds" not in scrape()  # absent when none
    now = datetime.now(UTC)
    holds.publish(any_db, [
        holds.New("default", "subscribe", now + timedelta(hours=3), "45009"),
        holds.New("shop", "sms", now + timedelta(seconds=50), "45011"),
        holds.New("old", "subscribe", now - timedelta(seconds=1), "45011"),  # ended
    ], who="d", now=now)
    samples = scrape()
    assert sorted((lab["app"], lab["channel"], v) for lab, v in
                  samples["herald_quota_holds"]) == [("default", "subscribe", 1.0),
                                                     ("shop", "sms", 1.0)]
    holds.lift(any_db, "shop", None, who="cli:op", now=datetime.now(UTC))
    samples = scrape()
    assert [lab for lab, _ in samples["herald_quota_holds"]] == [
        {"app": "default", "channel": "subscribe"}]
