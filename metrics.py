"""Prometheus metrics: what was sent, how long it took, how the jobs and the queue are.

Everything lives on a registry of its own (not prometheus_client's global one), so a
process, or a test, can hold several Metrics without name clashes. Two kinds:

- events the daemon reports as they happen: finished rows, send latency, job runs;
- state read at scrape time: queue depth per status, the age of the oldest due row,
  seconds until each app's access token expires, templates.yaml reloads refused.
  Reading it at scrape time means a
  row inserted or cancelled by another program, or finished by another daemon on the
  shared database, shows up at once, with no job keeping gauges in step.

Also on the registry: herald_build_info{version} and the process's CPU, memory and
file descriptors (prometheus_client's process and platform collectors).

The endpoint serves each scrape on a new thread (prometheus_client's threading WSGI
server), so the queue collector opens its own database connection and closes it
before returning; otherwise every scrape would leave a connection behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from wsgiref.simple_server import WSGIServer

from peewee import Database
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import clock
from db import holds
from db.heartbeat import seen
from db.models import STATUSES
from db.queue import (
    counts_by_status,
    held_for_grant,
    oldest_due_wait,
    pending_events,
    receipts_since,
)
from db.spending import counts as spending_counts
from logs import redact
from version import __version__

log = logging.getLogger("herald.metrics")

# 10 ms .. 10 s: a WeChat call normally takes 50-300 ms; http.timeout defaults to 10 s
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# a dispatch run that drains a backlog can take minutes; token refresh or purge, ms
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# Row content chooses the template label when a row names an unknown template, so the
# label set is capped: past this many names, new ones count under OTHER.
MAX_TEMPLATES = 200
OTHER = "(other)"

TokenExpiry = Callable[[], Mapping[str, datetime | None]]

# _created series double the series count for nothing Herald's dashboards use
disable_created_metrics()


class Metrics:
    """The daemon's metrics; Runtime.metrics holds one (runtime.NullMetrics when off)."""

    def __init__(
        self,
        *,
        db: Database | None = None,
        token_expiry: TokenExpiry | None = None,
        now: Callable[[], datetime] = clock.now,
        max_templates: int = MAX_TEMPLATES,
        reload_failures: Callable[[], int] | None = None,
        missing_after: float = 1800.0,
    ) -> None:
        self.registry = CollectorRegistry()
        Info("herald_build", "Herald's version", registry=self.registry).info(
            {"version": __version__})
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._templates: set[str] = set()
        self._templates_lock = threading.Lock()
        self._max_templates = max_templates
        self._finished = Counter(
            "herald_messages_finished", "Rows settled by a send attempt: success, fail, "
            "or wait (put back for a retry)", ["template", "status", "errcode"],
            registry=self.registry)
        self._send = Histogram(
            "herald_send_duration_seconds", "Duration of one WeChat subscribe/send call",
            buckets=SEND_BUCKETS, registry=self.registry)
        self._job_runs = Counter(
            "herald_job_runs", "Scheduled job runs by outcome", ["job", "outcome"],
            registry=self.registry)
        self._job_duration = Histogram(
            "herald_job_duration_seconds", "Duration of one scheduled job run", ["job"],
            buckets=JOB_BUCKETS, registry=self.registry)
        # SIGHUP: applied whole, or refused whole (reload.py); both start at 0 so an alert
        # on rate(...{result="refused"}) has a series to watch from the first scrape
        self._config_reloads = Counter(
            "herald_config_reloads", "SIGHUP reloads of config.yaml by result: applied (every "
            "change in force) or refused (the running configuration stays)", ["result"],
            registry=self.registry)
        for result in ("applied", "refused"):
            self._config_reloads.labels(result)
        self._job_last_ok = _LastSuccess()
        self.registry.register(self._job_last_ok)
        if db is not None:
            self.registry.register(QueueCollector(db, now=now, missing_after=missing_after))
        if token_expiry is not None:
            self.registry.register(TokenExpiryCollector(token_expiry, now=now))
        if reload_failures is not None:
            self.registry.register(ReloadFailures(reload_failures))

    # ---- events (called from the jobs; prometheus_client's metrics are thread-safe)

    def finished(self, template: str, status: str, errcode: int | None, n: int = 1) -> None:
        """n rows of one template settled alike (dispatch counts a written group at
        once: a labelled counter costs a lock and a lookup per call)."""
        label = "" if errcode is None else str(errcode)
        self._finished.labels(self._template_label(template), status, label).inc(n)

    def send_duration(self, seconds: float) -> None:
        self._send.observe(seconds)

    def job_run(self, job: str, seconds: float, ok: bool) -> None:
        self._job_runs.labels(job, "ok" if ok else "error").inc()
        self._job_duration.labels(job).observe(seconds)
        if ok:
            self._job_last_ok.mark(job)

    def config_reload(self, applied: bool) -> None:
        self._config_reloads.labels("applied" if applied else "refused").inc()

    def _template_label(self, template: str) -> str:
        with self._templates_lock:
            if template in self._templates:
                return template
            if len(self._templates) < self._max_templates:
                self._templates.add(template)
                return template
        return OTHER


class _LastSuccess(Collector):
    """herald_job_last_success_timestamp_seconds{job}: alert when a job stops succeeding."""

    NAME = "herald_job_last_success_timestamp_seconds"
    HELP = "Unix time of the last successful run of each job"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def mark(self, job: str) -> None:
        with self._lock:
            self._last[job] = clock.now().timestamp()

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["job"])]

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily(self.NAME, self.HELP, labels=["job"])
        with self._lock:
            for job, ts in sorted(self._last.items()):
                g.add_metric([job], ts)
        yield g


class QueueCollector(Collector):
    """Queue depth and backlog age, read from msg_list at each scrape.

    herald_queue_rows{status}: rows per status (all five, 0 when none).
    herald_oldest_waiting_seconds: age of the oldest due waiting row (status wait,
    send_at <= now); 0 when nothing is due. Scheduled rows are not backlog.
    herald_database_up: 1 when the queries worked; 0 (and no queue series) when the
    database could not be read, so a scrape still returns the other metrics.
    herald_quota_holds{app,channel}: 1 for each quota hold in force (db/holds.py: WeChat
    said the app's quota on that channel is spent, and every daemon holds those sends);
    no series when there is none.
    """

    def __init__(self, db: Database, *, now: Callable[[], datetime] = clock.now,
                 missing_after: float = 1800.0) -> None:
        self.db = db
        self.now = now
        # receipts, grants and pushes, read on the same connection in the same scrape
        self.truth = TruthCollector(db, missing_after=missing_after, now=now)

    def describe(self) -> Iterable[Metric]:
        # given, so registering does not run collect() (and query the database)
        return [*self._families(), self._holds_family(), *self.truth.describe()]

    @staticmethod
    def _holds_family() -> GaugeMetricFamily:
        return GaugeMetricFamily("herald_quota_holds", "1 per app and channel whose sends "
                                 "every daemon holds: WeChat said the quota is spent",
                                 labels=["app", "channel"])

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("herald_queue_rows", "msg_list rows per status",
                              labels=["status"]),
            GaugeMetricFamily("herald_oldest_waiting_seconds",
                              "Age of the oldest due waiting row (0 when none is due)"),
            GaugeMetricFamily("herald_database_up",
                              "1 if the last scrape could read the queue, else 0"),
        )

    def collect(self) -> Iterable[Metric]:
        rows, oldest, up = self._families()
        try:
            counts, age, held, truth = self._read()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail with the database
            log.warning("metrics: cannot read the queue: %s", redact(str(exc)))
            up.add_metric([], 0)
            yield up
            return
        for status in STATUSES:
            rows.add_metric([status], counts.get(status, 0))
        oldest.add_metric([], age)
        up.add_metric([], 1)
        holds_family = self._holds_family()
        for app, channel in held:
            holds_family.add_metric([app, channel], 1)
        yield from (rows, oldest, up, holds_family)
        yield from truth

    def _read(self) -> tuple[dict[str, int], float, list[tuple[str, str]], list[Metric]]:
        # a caller's thread with its own open connection (a job, a test) is reused and
        # left open; a scrape thread opens, queries and closes
        with _connection(self.db):
            counts, age = self._query()
            try:
                held = [(h.app, h.channel) for h in holds.active(self.db, self.now())]
            except Exception as exc:  # noqa: BLE001 - the other series still go out
                log.warning("metrics: cannot read the quota holds: %s", redact(str(exc)))
                held = []
            return counts, age, held, list(self.truth.collect())

    def _query(self) -> tuple[dict[str, int], float]:
        now = self.now()
        oldest = oldest_due_wait(self.db, now)
        age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        return counts_by_status(self.db), age


class TruthCollector(Collector):
    """What Herald knows beyond "WeChat said 0", read at each scrape.

    herald_receipts{state}: rows sent in the last hour by receipt: delivered, failed,
    missing (none after receipts.missing_after), awaiting (none yet). A rising share of
    missing is the "accepted but never delivered" alert (README).
    herald_rows_held_for_grant: rows waiting for a user's grant (grants.on_missing hold).
    herald_push_events_pending: pushed facts not applied yet.
    herald_rows_superseded, herald_rows_spending_held{reason}: the collapse's cancelled
    rows, and rows waiting for a send window, a collapse window or a cap (docs/grants.md).
    herald_push_events_total{result}: pushes the web side (serve) stored, found to be
    duplicates, or refused by cause, summed over the live `serve` processes' heartbeats.
    """

    WINDOW = timedelta(hours=1)

    def __init__(self, db: Database, *, missing_after: float,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.db = db
        self.missing_after = timedelta(seconds=missing_after)
        self.now = now

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("herald_receipts", "Rows sent in the last hour, by receipt",
                              labels=["state"]),
            GaugeMetricFamily("herald_rows_held_for_grant",
                              "Rows held until their user grants the template again"),
            GaugeMetricFamily("herald_push_events_pending", "push_event rows not applied yet"),
            GaugeMetricFamily("herald_rows_superseded",
                              "Rows cancelled because a newer row with their collapse_key "
                              "came (kept until purge)"),
            GaugeMetricFamily("herald_rows_spending_held",
                              "Waiting rows held by a send window, a collapse window or a "
                              "per-user cap", labels=["reason"]),
        )

    def describe(self) -> Iterable[Metric]:
        return [*self._families(), CounterMetricFamily(
            "herald_push_events", "Pushes received by the web side", labels=["result"])]

    def collect(self) -> Iterable[Metric]:
        receipts, held, pending, superseded, spend_held = self._families()
        pushes = CounterMetricFamily("herald_push_events", "Pushes received by the web side",
                                     labels=["result"])
        try:
            with _connection(self.db):
                now = self.now()
                r = receipts_since(self.db, now - self.WINDOW, now - self.missing_after)
                rows, _users = held_for_grant(self.db)
                waiting = pending_events(self.db)
                spent = spending_counts(self.db)
                totals: dict[str, int] = {}
                for seen_ in seen(self.db, now):
                    if seen_.role == "serve" and seen_.alive:
                        for what, n in (seen_.info.get("pushes") or {}).items():
                            if isinstance(n, int):
                                totals[str(what)] = totals.get(str(what), 0) + n
        except Exception as exc:  # noqa: BLE001 - never fail the whole scrape
            log.warning("metrics: cannot read receipts and grants: %s", redact(str(exc)))
            return
        for state in ("delivered", "failed", "missing", "awaiting"):
            receipts.add_metric([state], getattr(r, state))
        held.add_metric([], rows)
        pending.add_metric([], waiting)
        superseded.add_metric([], spent["superseded"])
        for reason in ("send_window", "collapse_window", "capped"):
            spend_held.add_metric([reason], spent[reason])
        for what, n in sorted(totals.items()):
            pushes.add_metric([what], n)
        yield from (receipts, held, pending, superseded, spend_held, pushes)


@contextmanager
def _connection(db: Database) -> Iterator[None]:
    """Reuse a caller's open connection (a job, a test); a scrape thread opens its own
    and closes it (each scrape runs on a new thread)."""
    if not db.is_closed():
        yield
        return
    with db.connection_context():
        yield


class TokenExpiryCollector(Collector):
    """herald_token_expiry_seconds{app}: seconds until the held token expires.

    Computed at scrape from `source` (app -> expires_at); 0 when the app has no token
    or it has expired, so one alert rule (`< 600`) covers both.
    """

    NAME = "herald_token_expiry_seconds"
    HELP = "Seconds until the app's access token expires (0: none or expired)"

    def __init__(self, source: TokenExpiry, *, now: Callable[[], datetime] = clock.now) -> None:
        self.source = source
        self.now = now

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["app"])]

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily(self.NAME, self.HELP, labels=["app"])
        try:
            expiry = dict(self.source())
        except Exception as exc:  # noqa: BLE001 - never fail the whole scrape
            log.warning("metrics: cannot read token expiry: %s", redact(str(exc)))
            expiry = {}
        now = self.now()
        for app, expires_at in sorted(expiry.items()):
            left = 0.0 if expires_at is None else (expires_at - now).total_seconds()
            g.add_metric([app], max(0.0, left))
        yield g


class ReloadFailures(Collector):
    """herald_template_reload_failures_total: templates.yaml edits refused (a broken
    file, or one that drops a template waiting rows name); the last good set stayed."""

    NAME = "herald_template_reload_failures"
    HELP = "templates.yaml reloads refused since start (the last good set stayed in force)"

    def __init__(self, source: Callable[[], int]) -> None:
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.NAME, self.HELP)]

    def collect(self) -> Iterable[Metric]:
        try:
            value = float(self.source())
        except Exception:  # noqa: BLE001 - never fail the whole scrape
            value = 0.0
        yield CounterMetricFamily(self.NAME, self.HELP, value=value)


def start_server(metrics: Metrics, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve /metrics on host:port from a daemon thread; port 0 picks a free port.

    Returns (server, thread): server.server_port is the bound port; stop with
    server.shutdown(), then server.server_close().
    """
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host,
             server.server_port)
    return server, thread


def stop_server(server: WSGIServer, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Stop serving and release the port (a scrape in progress finishes on its thread)."""
    server.shutdown()
    server.server_close()
    thread.join(timeout)
