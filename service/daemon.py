"""`run`'s jobs on APScheduler: each job of jobs/ on its interval, a database that was
busy retried, a reload's new pool, a graceful stop. What a job does lives in its module."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

import clock
from db import heartbeat, waker
from db.dialects import dialect
from jobs import dispatch, events, purge, stale_retry, token_refresh
from logs import redact
from runtime import Runtime

log = logging.getLogger("herald")
JOB_TRIES = 3  # runs of a job that a deadlock or lock timeout cut short, in a row


class Daemon:
    """APScheduler wiring for one running Herald: jobs, reload, graceful stop."""

    def __init__(self, rt: Runtime, *, only_dispatch: bool = False) -> None:
        self.rt = rt
        cfg = rt.config
        self.pool = ThreadPoolExecutor(cfg.dispatch.workers, thread_name_prefix="send")
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            # misfire_grace_time=None: after a stall the coalesced run still happens
            # (the 1 s default would drop it); coalesce + max_instances=1: a slow run
            # never piles up copies of itself.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.scheduler.add_listener(self._job_error, EVENT_JOB_ERROR)
        self._retired_pools: list[ThreadPoolExecutor] = []  # replaced by a reload
        self._wake = threading.Event()
        self.waker: waker.Waker | None = None  # told when each dispatch run ends
        self.started_at = clock.now()
        self.last_dispatch: datetime | None = None  # when a dispatch run last finished
        self._beats = 0
        self.jobs: dict[str, Callable[[], object]] = {
            "dispatch": self._dispatch,
            "token_refresh": lambda: token_refresh.run(rt),
            "stale_retry": lambda: stale_retry.run(rt),
            "purge": lambda: purge.run(rt),
            "events": lambda: events.run(rt),
        }
        if only_dispatch:  # dispatch process 1.. of N: process 0 runs the other jobs
            self.jobs = {"dispatch": self.jobs["dispatch"]}
        for name, body in self.jobs.items():
            extra = {}
            if name == "dispatch":
                extra["next_run_time"] = datetime.now(UTC)  # first run at start
            # (passing next_run_time=None would add the job paused)
            self.scheduler.add_job(self._wrap(name, body), "interval",
                                   seconds=cfg.jobs[name].every, id=name, name=name, **extra)

    def _wrap(self, name: str, fn: Callable[[], object]) -> Callable[[], object]:
        def job() -> object:
            t0, ok = time.monotonic(), False
            try:
                for attempt in range(1, JOB_TRIES + 1):
                    try:
                        # one connection per job run, closed after: pool threads live
                        # forever
                        with self.rt.db.connection_context():
                            result = fn()
                        ok = True
                        return result
                    except Exception as exc:
                        # A deadlock (MariaDB 1213, PostgreSQL 40P01) or a lock timeout
                        # rolled the job's transaction back: every job is idempotent, so
                        # it runs again rather than counting as a failed run.
                        if attempt == JOB_TRIES or not dialect(self.rt.db).is_retryable(exc):
                            raise
                        log.warning("job %s: database busy (%s); running it again", name,
                                    redact(str(exc))[:160])
                        time.sleep(0.1 * attempt + random.random() * 0.1)
                raise AssertionError("unreachable")
            finally:
                self.rt.metrics.job_run(name, time.monotonic() - t0, ok)
        return job

    def reschedule(self, name: str, every: float) -> None:
        if name in self.jobs:  # (a dispatch process other than 0 runs dispatch only)
            self.scheduler.reschedule_job(name, trigger="interval", seconds=every)

    def resize(self, workers: int) -> None:
        """A reload changed dispatch.workers: the next dispatch run sends on a pool of
        that size; a run under way finishes on the old one, which then goes."""
        old, self.pool = self.pool, ThreadPoolExecutor(workers, thread_name_prefix="send")
        self._retired_pools.append(old)

    def _job_error(self, event: JobExecutionEvent) -> None:
        # a failed run (database away, a bug) costs that run only; the next one carries on
        log.error("job %s failed: %s", event.job_id, redact(repr(event.exception)))

    def _dispatch(self) -> None:
        # A wake-up that arrives while a run is finishing would be dropped by
        # max_instances=1; the flag makes the run go round once more instead.
        while True:
            self._wake.clear()
            started = clock.now()
            try:
                dispatch.run(self.rt, pool=self.pool)
            finally:
                if self.waker is not None:  # read the next due time again
                    self.waker.ran(started)
            while self._retired_pools:  # (resize) no run holds them any more
                self._retired_pools.pop().shutdown(wait=False)
            self.last_dispatch = clock.now()
            if not self._wake.is_set() or self.rt.stopping.is_set():
                return

    def wake(self, name: str = "dispatch") -> None:
        """Run a job now (db/waker.py: a row was inserted or fell due)."""
        if name == "dispatch":
            self._wake.set()
        if self.scheduler.running:
            self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def start(self) -> None:
        self.scheduler.start()

    def beat(self) -> None:
        """This daemon's heartbeat row: alive, last dispatch, each app's token expiry and
        the configuration alerts in force (what `status` and the console show). Raises
        when the database is away: the shell (service/shell.py) says so, once."""
        rt = self.rt
        expiry = {a: rt.tokens.expires_at(a) for a in rt.config.apps}
        info = {"tokens": {a: e.isoformat() if e else None for a, e in expiry.items()},
                "alerts": rt.tokens.alerts(),
                "templates": len(rt.templates.current.templates),
                "template_reload_failures": rt.templates.failures}
        with rt.db.connection_context():
            heartbeat.beat(rt.db, daemon_id=rt.daemon_id, role="run",
                           started_at=self.started_at, now=clock.now(),
                           last_dispatch=self.last_dispatch, info=info)
            if self._beats % 240 == 0:  # about hourly: crashed daemons' rows go
                heartbeat.forget_old(rt.db, clock.now())
        self._beats += 1

    def stop(self) -> None:
        """Stop claiming, let in-flight sends finish and be recorded, then return."""
        self.rt.stopping.set()
        self.scheduler.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        try:
            with self.rt.db.connection_context():
                heartbeat.stopped(self.rt.db, self.rt.daemon_id)  # gone, not crashed
        except Exception:  # noqa: BLE001 - stopping must not fail on a database away
            pass
        self.rt.close()
