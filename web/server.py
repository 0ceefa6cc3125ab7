"""The web side's listeners (`herald serve`, commands/serve.py runs them in a process of its own).

Two listeners, each its own waitress server and thread pool, never sharing a port:

- web.listen (default 127.0.0.1:8080, behind a TLS reverse proxy): what the internet
  calls: WeChat's message push (/wechat/push/<app>) and Tencent Cloud SMS status
  callbacks (/tencent/sms/status/<callback_token>). It stores each fact, answers at
  once, and the events applier (jobs/events.py) turns facts into receipts and grants.
- console.listen (default 127.0.0.1:9465): the operator console.

Why waitress: a production WSGI server in pure Python (no compiler, no C extension to
build on a fresh machine), with a bounded thread pool and its own request-size and
connection limits, that runs on Linux without a process manager of its own and stops
cleanly from a signal. The web side holds no AppSecret: only push Tokens, AES keys and
the SMS callback token (Config.require lists what is missing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peewee import Database
from waitress import wasyncore
from waitress.server import create_server

from config import Config
from service.wiring import make_daemon_id, mask_config_secrets, template_holder
from templates import TemplateHolder
from web.wsgi import WSGIApp

log = logging.getLogger("herald.web")


@dataclass
class WebContext:
    """What the web apps share."""

    config: Config
    db: Database
    templates: TemplateHolder
    daemon_id: str
    # called after a push is stored, to apply it at once (the applier also polls)
    wake: Callable[[], None] = lambda: None
    stopping: threading.Event = field(default_factory=threading.Event)
    push_receiver: Any = None  # set by web.push.make_app: its counters go in heartbeats


class Listener:
    """One waitress server on its own thread."""

    def __init__(self, app: WSGIApp, host: str, port: int, *, name: str, threads: int = 8,
                 setting: str | None = None) -> None:
        from web.wsgi import guarded, mask_server_logs

        mask_server_logs()  # waitress's own lines show request paths
        self.name = name
        try:
            self.server: Any = create_server(
                guarded(app), host=host, port=port, threads=threads, ident="herald",
                # a push body is at most 64 KiB; nothing Herald serves needs more
                max_request_body_size=1024 * 1024, max_request_header_size=64 * 1024,
                channel_timeout=30, connection_limit=256, clear_untrusted_proxy_headers=True,
                expose_tracebacks=False)
        except OSError as exc:
            # The socket's own message names no address ("Address already in use"): say
            # which setting asked for which address, so a clash can be found and moved.
            raise OSError(exc.errno, f"{setting or name} {host}:{port}: "
                          f"{exc.strerror or exc}") from None
        self.port = int(self.server.effective_port)
        self.host = str(self.server.effective_host)
        self._thread = threading.Thread(target=self.server.run, name=f"web-{name}",
                                        daemon=True)
        self._stop_lock = threading.Lock()
        self._stopped = False

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: workers finish what they hold, the loop closes the sockets and
        ends, then the trigger (the loop's wake-up pipe) is closed here. Idempotent.

        Why not waitress's close_all as a trigger thunk: pull_trigger(thunk) appends the
        thunk *before* it writes the wake-up byte, and the loop thread may already be
        running the thunks (woken by a worker's byte). The thunk then closes the trigger
        and the byte goes to a closed descriptor: EBADF, or worse a descriptor the
        process has opened again since (someone else's socket gets an "x"). So the loop
        thread closes everything but the trigger and takes the trigger out of its map
        (the map empties, the loop ends); the trigger's descriptors stay open until the
        loop thread and every worker are gone, and only then are closed, from here.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        server = self.server
        trigger = server.trigger
        # Workers first: each wakes the loop through the trigger when it finishes a
        # request, so the trigger must be open until none is left.
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=timeout)
        workers_done = not server.task_dispatcher.threads
        if self._thread.is_alive():
            trigger.pull_trigger(lambda: _close_all_but_trigger(server))
            self._thread.join(timeout)
        else:  # never started, or its loop died: no loop thread to race
            _close_all_but_trigger(server)
        if not self._thread.is_alive() and workers_done:
            trigger.close()
        # else: a stuck worker or loop may still pull the trigger: leave its two
        # descriptors open (a leak until exit) rather than let a late byte land in a
        # descriptor that was reused

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def serve_credentials(cfg: Config) -> list[str]:
    """What `serve` must have: the web side holds no AppSecret; it needs the push tokens
    and keys and the SMS callback token of whatever it is configured to receive."""
    needed = [f"apps.{a}.push" for a, app in cfg.apps.items() if app.push is not None]
    if cfg.sms is not None:
        needed.append("sms.callback_token")
    return needed


def _close_all_but_trigger(server: Any) -> None:
    """In the loop thread: close every dispatcher but the trigger, and take the trigger
    out of the map without closing it, so the loop (which runs while its map is not
    empty) ends after this pass."""
    socket_map, trigger = server._map, server.trigger
    for obj in list(socket_map.values()):
        if obj is trigger:
            continue
        try:
            if obj is server:  # its own close() would close the trigger too
                wasyncore.dispatcher.close(obj)
            else:
                obj.close()
        except OSError:
            pass  # already gone (a peer that reset); the rest must still be closed
    trigger.del_channel(socket_map)
    socket_map.clear()


def build(cfg: Config, db: Database) -> WebContext:
    mask_config_secrets(cfg)
    return WebContext(config=cfg, db=db, templates=template_holder(cfg, db),
                      daemon_id=make_daemon_id() + ":web")


def start(ctx: WebContext) -> list[Listener]:
    """Start the listeners the config asks for; the first is the push receiver."""
    from web.push import make_app as push_app

    cfg = ctx.config
    listeners: list[Listener] = []
    if cfg.web.listen and cfg.web.host is not None and cfg.web.port is not None:
        listeners.append(Listener(push_app(ctx), cfg.web.host, cfg.web.port,
                                  name="push", setting="web.listen").start())
    if cfg.console.listen and cfg.console.host is not None and cfg.console.port is not None:
        from web.console import make_app as console_app

        listeners.append(Listener(console_app(ctx), cfg.console.host, cfg.console.port,
                                  name="console", setting="console.listen").start())
    return listeners


__all__ = ["Listener", "WebContext", "build", "serve_credentials", "start"]
