"""`herald serve`: Herald's web side in a process of its own (web/server.py: its
listeners); `herald console-password`."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime

import clock
from config import Config, load_config
from db import heartbeat
from logs import redact, setup_logging
from service.shell import Service, Shell
from web.server import Listener, WebContext, build, serve_credentials, start

log = logging.getLogger("herald.web")


def cmd_serve(args: argparse.Namespace) -> int:
    """The web side: WeChat push receiver, SMS status callbacks, the console."""
    cfg = load_config(args.config, strict_secrets=False)
    needed = serve_credentials(cfg)
    if needed:  # (require() with no prefix would ask for every secret, the AppSecret too)
        cfg.require(*needed)
    setup_logging(cfg.log.format, cfg.log.level, sql=cfg.log.sql)
    return serve(cfg)


def cmd_console_password(args: argparse.Namespace) -> int:
    from web.console import auth

    return auth.password_verb(args)


def serve(cfg: Config) -> int:
    """The serve verb: run until SIGTERM/SIGINT; SIGHUP reloads config.yaml and the
    templates (whole or not at all); the templates file is also watched."""
    from db.connection import connect
    from db.schema import SchemaError, ensure_current
    from jobs import events
    from reload import reload_serve

    db = connect(cfg.database)
    try:
        done = ensure_current(db)  # create or upgrade in place, like run
    except SchemaError as exc:
        log.error("serve: %s", exc)
        return 1
    if done:
        log.info("%s", done)
    ctx = build(cfg, db)
    applier = events.Applier(ctx)
    ctx.wake = applier.wake
    started = clock.now()
    listeners: list[Listener] = []
    shell = Shell(Service(
        stopping=ctx.stopping, templates=ctx.templates,
        # config.yaml and the templates, whole or not at all (reload.py)
        reload=lambda: reload_serve(ctx, needs=serve_credentials),
        beat=lambda: _beat(ctx, started),
        # only while every listener's thread still serves
        healthy=lambda _mono: all(li.alive for li in listeners),
        unhealthy="a web listener stopped serving: watchdog pings stopped (systemd "
                  "restarts serve)"))
    shell.install()
    try:
        listeners += start(ctx)
    except OSError as exc:
        log.error("serve: cannot listen: %s", redact(str(exc)))
        return 1
    applier.start()
    for line in cfg.warnings:
        log.warning("config: %s", line)
    where = ", ".join(f"{li.name} on {li.url}" for li in listeners) or "nothing"
    log.info("herald serve listening: %s", where)
    shell.ready(f"serving {where}")
    try:
        shell.run()
    finally:
        for listener in listeners:
            listener.stop()
        applier.stop()
        try:
            with db.connection_context():
                heartbeat.stopped(db, ctx.daemon_id)
        except Exception:  # noqa: BLE001 - stopping must not fail on a database away
            pass
        log.info("herald serve stopped")
    return 0


def _beat(ctx: WebContext, started: datetime) -> None:
    """serve's heartbeat row: where it listens, the pushes it took (raises when the
    database is away: the shell says so, once)."""
    with ctx.db.connection_context():
        counts = ctx.push_receiver.snapshot() if ctx.push_receiver else {}
        heartbeat.beat(ctx.db, daemon_id=ctx.daemon_id, role="serve", started_at=started,
                       now=clock.now(), info={
                           "listen": {"web": ctx.config.web.listen,
                                      "console": ctx.config.console.listen},
                           "pushes": counts})
