#!/usr/bin/env python3
"""Herald: deliver WeChat subscribe messages from the msg_list table.

    herald run        the daemon (under systemd: see systemd/); also `python scheduler.py run`
    herald demo       everything local: SQLite, the sandbox, sample rows
    herald --help     every verb (the parser is commands/cli.py, the verbs commands/)

This file stays thin: it wires the jobs of jobs/ to APScheduler, keeps the daemon's
heartbeat and handles signals. What a job does lives in its module.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from peewee import DatabaseError

import clock
import commands
from commands import processes
from commands.cli import build as build_parser
from config import Config, ConfigError, load_config
from db import heartbeat
from db.connection import connect, dialect_of
from db.dialects import dialect
from db.errors import cause, describe
from db.queue import counts_by_status
from db.schema import SchemaError, ensure_current
from jobs import dispatch, events, purge, stale_retry, token_refresh
from logs import install_redaction, redact, setup_logging
from notify import notify, watchdog_interval
from reload import reload_config, templates_watch
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
        self.started_at = clock.now()
        self.last_dispatch: datetime | None = None  # when a dispatch run last finished
        self._beats = 0
        self._beat_failing = False
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
            dispatch.run(self.rt, pool=self.pool)
            while self._retired_pools:  # (resize) no run holds them any more
                self._retired_pools.pop().shutdown(wait=False)
            self.last_dispatch = clock.now()
            if not self._wake.is_set() or self.rt.stopping.is_set():
                return

    def wake(self, name: str = "dispatch") -> None:
        """Run a job now (PostgreSQL NOTIFY: a row was inserted)."""
        if name == "dispatch":
            self._wake.set()
        if self.scheduler.running:
            self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def start(self) -> None:
        self.scheduler.start()

    def beat(self) -> None:
        """This daemon's heartbeat row: alive, last dispatch, each app's token expiry and
        the configuration alerts in force (what `status` and the console show)."""
        rt = self.rt
        expiry = {a: rt.tokens.expires_at(a) for a in rt.config.apps}
        info = {"tokens": {a: e.isoformat() if e else None for a, e in expiry.items()},
                "alerts": rt.tokens.alerts(),
                "templates": len(rt.templates.current.templates),
                "template_reload_failures": rt.templates.failures}
        try:
            with rt.db.connection_context():
                heartbeat.beat(rt.db, daemon_id=rt.daemon_id, role="run",
                               started_at=self.started_at, now=clock.now(),
                               last_dispatch=self.last_dispatch, info=info)
                if self._beats % 240 == 0:  # about hourly: crashed daemons' rows go
                    heartbeat.forget_old(rt.db, clock.now())
            self._beats += 1
            self._beat_failing = False
        except Exception as exc:  # noqa: BLE001 - a heartbeat must not stop the daemon
            # said once, not every 15 s while the database is away
            (log.debug if self._beat_failing else log.warning)(
                "heartbeat not written: %s", cause(exc)[:160])
            self._beat_failing = True

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


def build(cfg: Config) -> Runtime:
    db = connect(cfg.database)
    try:
        # create the schema on a fresh database (as the service's own user, so the
        # SQLite file belongs to it), upgrade one an earlier release made
        done = ensure_current(db)
    except SchemaError as exc:
        raise SystemExit(str(exc)) from None
    except DatabaseError as exc:  # unreachable, no such database: one sentence naming it
        raise commands.VerbError(describe(exc, cfg.database)) from None
    if done:
        log.info("%s", done)
    return Runtime.build(cfg, db)


def queue_status(rt: Runtime) -> str:
    """One line for systemd's STATUS= (what `systemctl status` shows)."""
    try:
        with rt.db.connection_context():
            counts = counts_by_status(("wait", "sending"))
    except Exception as exc:  # noqa: BLE001 - a status line must not kill the loop
        return f"database unavailable: {cause(exc)[:120]}"
    return f"{counts['wait']} waiting, {counts['sending']} sending"


def run_credentials(cfg: Config) -> list[str]:
    """What the daemon itself must have: each app's appid and secret, the SMS keys. The
    push Token and AES key belong to `serve` (another unit, other credentials)."""
    needed = [f"apps.{name}.{key}" for name in cfg.apps for key in ("appid", "secret",
                                                                     "token_file")]
    return [*needed, "sms.secret_id", "sms.secret_key"]


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, strict_secrets=False)
    cfg.require(*run_credentials(cfg))
    setup_logging(cfg.log.format, cfg.log.level, sql=cfg.log.sql)
    # dispatch.processes > 1: this `run` supervises that many, each a `run` told its
    # share (commands/processes.py); child 0 also runs the other jobs and the metrics
    share = processes.child_share()
    if share is None and cfg.dispatch.processes > 1 and not args.once:
        return processes.supervise(cfg)
    first = share is None or share[0] == 0
    rt = build(cfg)
    rt.share = share
    if args.once:
        return run_once(rt)
    server = None
    if (first and cfg.metrics.listen and cfg.metrics.host is not None
            and cfg.metrics.port is not None):
        from metrics import Metrics, start_server

        rt.metrics = Metrics(db=rt.db, token_expiry=lambda: {
            a: rt.tokens.expires_at(a) for a in rt.config.apps},
            reload_failures=lambda: rt.templates.failures,
            missing_after=cfg.receipts.missing_after)
        assert cfg.metrics.host is not None and cfg.metrics.port is not None  # listen set
        try:
            server = start_server(rt.metrics, cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            log.error("metrics.listen %s: cannot listen: %s", cfg.metrics.listen, exc)
            return commands.EXIT_RUNTIME
    try:
        if first:  # the other dispatch processes read what child 0 stored
            with rt.db.connection_context():
                token_refresh.run(rt)
    except token_refresh.TokenRefreshFailed as exc:
        for app, reason in exc.problems.items():
            log.error("app %s: no access token at start: %s (rows wait until it works)",
                      app, reason)
    daemon = Daemon(rt, only_dispatch=not first)
    stop = threading.Event()
    reload = threading.Event()

    signals: list[str] = []

    def on_stop(signum: int, _frame: object) -> None:
        # no logging here: a handler that logs can deadlock on the logging lock
        signals.append(signal.Signals(signum).name)
        rt.stopping.set()  # dispatch stops claiming at once
        stop.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    daemon.start()
    wakeup = None
    if dialect_of(rt.db) == "postgres":
        # an INSERT trigger NOTIFYs: new rows go out in about a second, not at the next
        # poll (which stays as the fallback)
        from db.wakeup import PgWakeup

        wakeup = PgWakeup(cfg.database, lambda: daemon.wake("dispatch"))
        wakeup.start()
    notify("READY=1", f"STATUS={queue_status(rt)}")
    log.info("herald running as %s: %d apps, %d templates, dispatch every %ss%s",
             rt.daemon_id, len(cfg.apps), len(rt.templates.current.templates),
             cfg.jobs["dispatch"].every,
             f" (dispatch process {share[0]}/{share[1]})" if share else "")
    ping_every = watchdog_interval()
    # a dispatch run that makes no progress for this long is hung: stop the pings and
    # let systemd restart us (sends are bounded by http.timeout, writes by busy waits)
    hung_after = max(120.0, 3 * cfg.http.timeout)
    last_ping = last_status = last_beat = 0.0
    warned = False
    ticks = 0
    # The main thread only waits: no scheduler work runs inside a signal handler.
    while not stop.wait(0.5):
        ticks += 1
        mono = time.monotonic()
        if ping_every and mono - last_ping >= ping_every:
            if rt.heartbeat.healthy(mono, hung_after):
                notify("WATCHDOG=1")
                last_ping, warned = mono, False
            elif not warned:
                log.error("dispatch made no progress for %.0fs: watchdog pings stopped",
                          hung_after)
                warned = True
        if mono - last_status >= 30:
            notify(f"STATUS={queue_status(rt)}")
            last_status = mono
        if mono - last_beat >= heartbeat.HEARTBEAT_EVERY:
            daemon.beat()
            last_beat = mono
        if reload.is_set():
            reload.clear()
            notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            # config.yaml and the templates, whole or not at all (reload.py)
            reload_config(rt, daemon, needs=run_credentials)
            notify("READY=1", f"STATUS={queue_status(rt)}")
        elif ticks % 4 == 0:
            templates_watch(rt.templates)
    log.info("%s: stopping; no new claims, waiting for in-flight sends",
             signals[0] if signals else "stop")
    notify("STOPPING=1")
    if wakeup is not None:
        wakeup.stop()
    daemon.stop()
    if server is not None:
        from metrics import stop_server

        stop_server(*server)
    log.info("herald stopped")
    return commands.EXIT_OK


def run_once(rt: Runtime) -> int:
    """`run --once`, for cron: each job once, dispatch until nothing is due, then exit
    (1 if a job failed: cron mails the output)."""
    ok = True
    jobs: list[tuple[str, Callable[[], object]]] = [
        ("token_refresh", lambda: token_refresh.run(rt)),
        ("stale_retry", lambda: stale_retry.run(rt)),
        ("dispatch", lambda: dispatch.run(rt)),
        ("purge", lambda: purge.run(rt))]
    try:
        for name, fn in jobs:
            try:
                with rt.db.connection_context():
                    fn()
            except token_refresh.TokenRefreshFailed as exc:
                for app, reason in exc.problems.items():  # its rows wait for the next run
                    log.error("app %s: no access token: %s", app, reason)
            except Exception as exc:  # noqa: BLE001 - the other jobs still run
                log.error("job %s failed: %s", name, redact(repr(exc)))
                ok = False
    finally:
        rt.close()
    return commands.EXIT_OK if ok else commands.EXIT_RUNTIME


def cmd_serve(args: argparse.Namespace) -> int:
    """The web side: WeChat push receiver, SMS status callbacks, the console."""
    from web import server

    cfg = load_config(args.config, strict_secrets=False)
    needed = server.serve_credentials(cfg)
    if needed:  # (require() with no prefix would ask for every secret, the AppSecret too)
        cfg.require(*needed)
    setup_logging(cfg.log.format, cfg.log.level, sql=cfg.log.sql)
    return server.main(cfg)


def cmd_console_password(args: argparse.Namespace) -> int:
    from web.console import auth

    return auth.password_verb(args)


def cmd_demo(args: argparse.Namespace) -> int:
    import demo

    return demo.main(args)


def parser() -> argparse.ArgumentParser:
    return build_parser({"run": cmd_run, "serve": cmd_serve, "demo": cmd_demo,
                         "console-password": cmd_console_password})


def main(argv: list[str] | None = None) -> int:
    # every verb: whatever a library logs (Python's last-resort handler prints warnings
    # to stderr) is redacted like the daemons' own lines
    install_redaction()
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return commands.EXIT_USAGE
    except commands.VerbError as exc:  # an expected failure, said in one sentence
        print(redact(str(exc)), file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # the reader went away (`| head`): not a failure; keep the interpreter's flush at
        # exit from raising again (the Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return commands.EXIT_OK
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback, for operators
        logging.getLogger("herald").debug("failure", exc_info=True)
        text = f"database: {cause(exc)}" if isinstance(exc, DatabaseError) else str(exc)
        print(f"error: {redact(text)}", file=sys.stderr)
        return commands.EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
