#!/usr/bin/env python3
"""Herald: deliver WeChat subscribe messages from the msg_list table.

    python scheduler.py run        the daemon (under systemd: see systemd/)
    python scheduler.py demo       everything local: SQLite, the sandbox, sample rows

This file stays thin: it parses the command line, wires the jobs of jobs/ to
APScheduler and handles signals. What a job does lives in its module.
"""

from __future__ import annotations

import argparse
import logging
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

import commands
from config import Config, ConfigError, load_config
from db.connection import connect, dialect_of, init_schema
from db.dialects import dialect
from db.queue import counts_by_status
from jobs import dispatch, purge, stale_retry, token_refresh
from logs import redact, setup_logging
from notify import notify, watchdog_interval
from reload import reload_config
from runtime import Runtime

log = logging.getLogger("herald")
JOB_TRIES = 3  # runs of a job that a deadlock or lock timeout cut short, in a row


class Daemon:
    """APScheduler wiring for one running Herald: jobs, reload, graceful stop."""

    def __init__(self, rt: Runtime) -> None:
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
        self._wake = threading.Event()
        self.jobs: dict[str, Callable[[], object]] = {
            "dispatch": self._dispatch,
            "token_refresh": lambda: token_refresh.run(rt),
            "stale_retry": lambda: stale_retry.run(rt),
            "purge": lambda: purge.run(rt),
        }
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
        self.scheduler.reschedule_job(name, trigger="interval", seconds=every)

    def _job_error(self, event: JobExecutionEvent) -> None:
        # a failed run (database away, a bug) costs that run only; the next one carries on
        log.error("job %s failed: %s", event.job_id, redact(repr(event.exception)))

    def _dispatch(self) -> None:
        # A wake-up that arrives while a run is finishing would be dropped by
        # max_instances=1; the flag makes the run go round once more instead.
        while True:
            self._wake.clear()
            dispatch.run(self.rt, pool=self.pool)
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

    def stop(self) -> None:
        """Stop claiming, let in-flight sends finish and be recorded, then return."""
        self.rt.stopping.set()
        self.scheduler.shutdown(wait=True)
        self.pool.shutdown(wait=True)
        self.rt.close()


def build(cfg: Config) -> Runtime:
    db = connect(cfg.database)
    with db.connection_context():
        missing = {"msg_list", "access_token"} - set(db.get_tables())
    if missing:
        # First start (e.g. systemd's fresh state directory): create the schema as the
        # service's own user, so the SQLite file belongs to it. A server account
        # without CREATE rights gets a clear message instead.
        try:
            init_schema(db)
            log.info("created tables %s", ", ".join(sorted(missing)))
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(f"tables {', '.join(sorted(missing))} missing and could not be "
                             f"created ({redact(str(exc))}): run `python scheduler.py "
                             "init-db` with an account that may create tables") from None
    return Runtime.build(cfg, db)


def queue_status(rt: Runtime) -> str:
    """One line for systemd's STATUS= (what `systemctl status` shows)."""
    try:
        with rt.db.connection_context():
            counts = counts_by_status(("wait", "sending"))
    except Exception as exc:  # noqa: BLE001 - a status line must not kill the loop
        return f"database unavailable: {redact(str(exc))[:80]}"
    return f"{counts['wait']} waiting, {counts['sending']} sending"


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg.log.format, cfg.log.level)
    rt = build(cfg)
    server = None
    if cfg.metrics.listen:
        from metrics import Metrics, start_server

        rt.metrics = Metrics(db=rt.db, token_expiry=lambda: {
            a: rt.tokens.expires_at(a) for a in rt.config.apps})
        try:
            server = start_server(rt.metrics, cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            log.error("metrics.listen %s: cannot listen: %s", cfg.metrics.listen, exc)
            return commands.EXIT_RUNTIME
    try:
        with rt.db.connection_context():
            token_refresh.run(rt)
    except token_refresh.TokenRefreshFailed as exc:
        for app, reason in exc.problems.items():
            log.error("app %s: no access token at start: %s (rows wait until it works)",
                      app, reason)
    daemon = Daemon(rt)
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
    log.info("herald running as %s: %d apps, %d templates, dispatch every %ss",
             rt.daemon_id, len(cfg.apps), len(rt.templates.current.templates),
             cfg.jobs["dispatch"].every)
    ping_every = watchdog_interval()
    # a dispatch run that makes no progress for this long is hung: stop the pings and
    # let systemd restart us (sends are bounded by http.timeout, writes by busy waits)
    hung_after = max(120.0, 3 * cfg.http.timeout)
    last_ping = last_status = 0.0
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
        if reload.is_set():
            reload.clear()
            notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            reload_config(rt, daemon)
            rt.templates.reload()
            notify("READY=1", f"STATUS={queue_status(rt)}")
        elif ticks % 4 == 0:
            rt.templates.reload_if_changed()
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


def cmd_serve(args: argparse.Namespace) -> int:
    """The web side: WeChat push receiver, SMS status callbacks, the console."""
    from web import server

    cfg = load_config(args.config, strict_secrets=False)
    # the web side holds no AppSecret; it needs the push tokens/keys and the SMS
    # callback token of whatever it is configured to receive
    needed = [f"apps.{a}.push" for a, app in cfg.apps.items() if app.push is not None]
    if cfg.sms is not None:
        needed.append("sms.callback_token")
    if needed:  # (require() with no prefix would ask for every secret, the AppSecret too)
        cfg.require(*needed)
    setup_logging(cfg.log.format, cfg.log.level)
    return server.main(cfg)


def cmd_console_password(args: argparse.Namespace) -> int:
    from web.console import auth

    return auth.password_verb(args)


def cmd_demo(args: argparse.Namespace) -> int:
    import demo

    return demo.main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python scheduler.py",
        description="Herald delivers WeChat Mini Program subscribe messages from the "
                    "msg_list table. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or "
                    "bad config.",
    )
    p.add_argument("--config", metavar="PATH",
                   help="config file (default: $HERALD_CONFIG, else ./config.yaml)")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    s = sub.add_parser("run", help="run the daemon (stop with SIGTERM or Ctrl-C)",
                       description="Run the daemon: dispatch due rows, keep tokens fresh. "
                                   "SIGHUP reloads templates.yaml; SIGTERM/SIGINT stop "
                                   "claiming, finish in-flight sends and exit 0.")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("serve", help="run the web side: WeChat push, SMS callbacks, console",
                       description="Serve WeChat message pushes and SMS status callbacks on "
                                   "web.listen and the operator console on console.listen. "
                                   "Needs no AppSecret. SIGTERM stops it; SIGHUP reloads "
                                   "templates.")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("console-password", help="print a password hash for console.users",
                       description="Read a password on stdin and print the hash to put in "
                                   "console.users.<name>.password_hash.")
    s.set_defaults(fn=cmd_console_password)

    s = sub.add_parser("demo", help="run everything locally: SQLite, sandbox, sample rows",
                       description="Build a SQLite queue in ./demo-run, start the local "
                                   "WeChat sandbox, insert sample rows (successes and "
                                   "failures), run the daemon until they settle and print "
                                   "them. Needs no WeChat account.")
    s.add_argument("--dir", default="demo-run", help="scratch folder (default: demo-run)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("init-db", help="create msg_list and access_token (idempotent)")
    s.set_defaults(fn=commands.cmd_init_db)

    s = sub.add_parser("schema", help="print the reference DDL for a database dialect")
    s.add_argument("--dialect", choices=["sqlite", "postgres", "mysql"], default="sqlite")
    s.set_defaults(fn=commands.cmd_schema)

    s = sub.add_parser("check", help="validate config.yaml and templates.yaml",
                       description="Validate the config and the templates; print what "
                                   "is wrong with key, value and what is allowed; exit 2 "
                                   "on any problem.")
    s.set_defaults(fn=commands.cmd_check)

    s = sub.add_parser("enqueue", help="insert one message row",
                       description="Insert a row into msg_list, as an application would. "
                                   "Prints the new row's id.")
    s.add_argument("template", help="template name from templates.yaml (or its template_id)")
    s.add_argument("openid", help="recipient openid")
    s.add_argument("--params", default="[]", help="JSON array (positional) or object")
    s.add_argument("--page", help="override the template's page")
    s.add_argument("--app", help="configured app name (default: default)")
    s.add_argument("--priority", type=int, default=0, help="higher is sent first")
    s.add_argument("--send-at", help="not before this time: ISO 8601 (UTC if no offset) or +5m")
    s.add_argument("--expire-at", help="never after this time: ISO 8601 or +1h")
    s.add_argument("--dedup-key", help="unique key: a second insert with it is rejected")
    s.set_defaults(fn=commands.cmd_enqueue)

    s = sub.add_parser("status", help="counts by status, oldest waiting row, recent failures")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--failures", type=int, default=10, help="how many recent failures")
    s.set_defaults(fn=commands.cmd_status)

    s = sub.add_parser("render", help="show the exact request a row would produce (no send)",
                       description="Render a row (by id) or ad-hoc values into the request "
                                   "body WeChat would get. Sends nothing; the token is never "
                                   "shown.")
    s.add_argument("id", nargs="?", type=int, help="msg_list row id")
    s.add_argument("--template")
    s.add_argument("--openid", default="oPREVIEW")
    s.add_argument("--params", default="[]")
    s.add_argument("--page")
    s.add_argument("--app")
    s.set_defaults(fn=commands.cmd_render)

    s = sub.add_parser("retry", help="send failed rows again (by id, errcode, template, age)",
                       description="Put failed rows back to wait with attempts reset. All "
                                   "filters given must match. Try --dry-run first.")
    s.add_argument("ids", nargs="*", type=int, help="row ids")
    s.add_argument("--errcode", type=int, help="only rows whose last errcode is this")
    s.add_argument("--template", help="only rows of this template")
    s.add_argument("--failed-within", metavar="DURATION", help="failed in the last 2h, 1d...")
    s.add_argument("--failed-before", metavar="DURATION", help="failed more than 1h... ago")
    s.add_argument("--all", action="store_true", help="every failed row (no other filter)")
    s.add_argument("--dry-run", action="store_true", help="only count and list them")
    s.set_defaults(fn=commands.cmd_retry)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return commands.EXIT_USAGE
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback, for operators
        logging.getLogger("herald").debug("failure", exc_info=True)
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return commands.EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
