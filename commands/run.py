"""`herald run`: the daemon (and `run --once`, for cron)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from peewee import DatabaseError

import commands
from config import Config, load_config
from db import waker
from db.connection import connect
from db.errors import cause, describe
from db.queue import counts_by_status
from db.schema import SchemaError, ensure_current
from jobs import dispatch, purge, stale_retry, token_refresh
from logs import redact, setup_logging
from reload import reload_config
from runtime import Runtime
from service import processes
from service.daemon import Daemon
from service.shell import Service, Shell

log = logging.getLogger("herald")


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
            counts = counts_by_status(rt.db, ("wait", "sending"))
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
    # share (service/processes.py); child 0 also runs the other jobs and the metrics
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
    # a dispatch run that makes no progress for this long is hung: stop the pings and
    # let systemd restart us (sends are bounded by http.timeout, writes by busy waits)
    hung_after = max(120.0, 3 * cfg.http.timeout)
    shell = Shell(Service(
        stopping=rt.stopping, templates=rt.templates,
        # config.yaml and the templates, whole or not at all (reload.py)
        reload=lambda: reload_config(rt, daemon, needs=run_credentials),
        beat=daemon.beat,
        healthy=lambda mono: rt.heartbeat.healthy(mono, hung_after),
        unhealthy=f"dispatch made no progress for {hung_after:.0f}s: watchdog pings stopped",
        status=lambda: queue_status(rt),
        orphaned=processes.supervisor_gone() if share else None))
    shell.install()
    # new and newly due rows go out within a second, not at the next poll (which stays
    # as the fallback)
    daemon.waker = waker.for_daemon(cfg.database, cfg.dispatch.wake,
                                    lambda: daemon.wake("dispatch"))
    daemon.start()
    if daemon.waker is not None:
        daemon.waker.start()
    shell.ready()
    log.info("herald running as %s: %d apps, %d templates, dispatch every %ss%s",
             rt.daemon_id, len(cfg.apps), len(rt.templates.current.templates),
             cfg.jobs["dispatch"].every,
             f" (dispatch process {share[0]}/{share[1]})" if share else "")
    # The main thread only waits: no scheduler work runs inside a signal handler.
    stopped_by = shell.run()
    log.info("%s: stopping; no new claims, waiting for in-flight sends", stopped_by)
    if daemon.waker is not None:
        daemon.waker.stop()
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
