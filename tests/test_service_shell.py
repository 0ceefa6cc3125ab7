"""service/shell.py: the one main loop of `run` and `serve`.

`run` under systemd is shown in test_operations.py (READY with STATUS, WATCHDOG,
RELOADING/READY around a SIGHUP, STOPPING); here `serve` as a real child process keeps
the same promises through the same shell, and the shell's own rules are checked in this
process: the watchdog stops while the process is unhealthy (said once), a heartbeat
that cannot be written is said once, a stop signal stops taking work at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

import clock
from db import heartbeat
from db.connection import init_schema
from service.shell import Service, Shell
from templates import TemplateHolder
from tests.bound import connect
from tests.conftest import ROOT
from tests.support import clean_env, config_data, wait_for
from tests.test_operations import NotifyListener, free_port


def _heartbeat_roles(db) -> list[str]:
    with db.connection_context():
        return [s.role for s in heartbeat.seen(db, clock.now())]


@pytest.mark.slow
def test_serve_speaks_to_systemd_through_the_shell(tmp_path: Path) -> None:
    data = config_data(folder=tmp_path, web={"listen": f"127.0.0.1:{free_port()}"},
                       console={"listen": None})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    db = connect(data["database"])
    init_schema(db)
    listener = NotifyListener(tmp_path / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="1000000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scheduler.py"), "--config", str(cfg),
                             "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: listener.seen("READY=1") >= 1, timeout=30), listener.messages
        ready = next(m for m in listener.messages if m.startswith("READY=1"))
        assert "STATUS=serving push on http://127.0.0.1:" in ready
        assert wait_for(lambda: listener.seen("WATCHDOG=1") >= 2, timeout=5)
        assert wait_for(lambda: _heartbeat_roles(db) == ["serve"])  # its row, at once
        proc.send_signal(signal.SIGHUP)  # `systemctl reload` waits between these two
        assert wait_for(lambda: listener.seen("RELOADING=1") == 1 and
                        listener.seen("READY=1") == 2), listener.messages
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert listener.seen("STOPPING=1") == 1
    assert _heartbeat_roles(db) == []  # a clean stop takes its row away
    assert "config reloaded" in err and "Traceback" not in err


# `serve` with one listener whose loop the test can end from outside (SIGUSR2): the
# loop is told to close its sockets, as Listener.stop does, and its thread ends
_SERVE_WITH_A_FRAGILE_LISTENER = """
import signal, sys
from web import server
started = []
original = server.Listener.start
def start(self):
    started.append(self)
    return original(self)
server.Listener.start = start
def end_a_loop(*_):
    s = started[0].server
    s.trigger.pull_trigger(lambda: server._close_all_but_trigger(s))
signal.signal(signal.SIGUSR2, end_a_loop)
import scheduler
sys.argv = ["scheduler.py", "--config", sys.argv[1], "serve"]
sys.exit(scheduler.main())
"""


@pytest.mark.slow
def test_serve_stops_the_watchdog_when_a_listener_stops_serving(tmp_path: Path) -> None:
    """systemd restarts `serve` only if the pings stop: a listener whose thread died
    (the push receiver no longer answers WeChat) must stop them, and say so."""
    data = config_data(folder=tmp_path, web={"listen": f"127.0.0.1:{free_port()}"},
                       console={"listen": None})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    init_schema(connect(data["database"]))
    listener = NotifyListener(tmp_path / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    errors = tmp_path / "serve.err"
    with errors.open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", _SERVE_WITH_A_FRAGILE_LISTENER,
                                 str(cfg)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=err_file, text=True)
        try:
            assert wait_for(lambda: listener.seen("READY=1") >= 1, timeout=30), \
                listener.messages
            assert wait_for(lambda: listener.seen("WATCHDOG=1") >= 2, timeout=5)
            proc.send_signal(signal.SIGUSR2)
            assert wait_for(lambda: "a web listener stopped serving" in errors.read_text(),
                            timeout=10), errors.read_text()
            pinged = listener.seen("WATCHDOG=1")
            # a reload takes the loop round several ticks: still no ping after it
            proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: listener.seen("READY=1") == 2, timeout=10)
            assert listener.seen("WATCHDOG=1") <= pinged + 1  # one may have been in flight
            assert proc.poll() is None  # it does not exit: systemd's watchdog restarts it
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    text = errors.read_text()
    assert text.count("watchdog pings stopped") == 1, text
    assert "Traceback" not in text


class Parts:
    """A process's parts as the shell sees them, each switchable by the test."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "templates.yaml"
        path.write_text((ROOT / "templates.yaml").read_text(encoding="utf-8"))
        self.templates = TemplateHolder(path)
        self.stopping = threading.Event()
        self.is_healthy = True
        self.beat_fails = False
        self.beats = 0
        self.reloads = 0
        self.checks = 0  # times the shell asked whether it may ping the watchdog

    def healthy(self, _mono: float) -> bool:
        self.checks += 1
        return self.is_healthy

    def beat(self) -> None:
        if self.beat_fails:
            raise OSError("database is away")
        self.beats += 1

    def reload(self) -> None:
        self.reloads += 1

    def service(self) -> Service:
        return Service(stopping=self.stopping, templates=self.templates, reload=self.reload,
                       beat=self.beat, healthy=self.healthy,
                       unhealthy="dispatch made no progress: watchdog pings stopped",
                       status=lambda: f"{self.reloads} reloads")


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NotifyListener:
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    return listener


def test_the_watchdog_stops_while_unhealthy_and_says_so_once(
        tmp_path: Path, notify_socket: NotifyListener, caplog: pytest.LogCaptureFixture) -> None:
    parts = Parts(tmp_path)
    shell = Shell(parts.service())
    caplog.set_level(logging.INFO, logger="herald")
    loop = threading.Thread(target=shell.run, daemon=True)
    loop.start()
    try:
        assert wait_for(lambda: notify_socket.seen("WATCHDOG=1") >= 1)
        assert wait_for(lambda: parts.beats == 1)  # the heartbeat row at the first tick
        parts.is_healthy = False
        pinged = notify_socket.seen("WATCHDOG=1")
        asked = parts.checks
        assert wait_for(lambda: caplog.text.count("watchdog pings stopped") == 1)
        # three watchdog periods later: no ping, still said once
        assert wait_for(lambda: parts.checks >= asked + 3)
        assert notify_socket.seen("WATCHDOG=1") <= pinged + 1  # one may have been in flight
        shell.reload.set()  # (SIGHUP) the reload runs on the loop's thread, told apart
        assert wait_for(lambda: notify_socket.seen("RELOADING=1") == 1)
        assert wait_for(lambda: notify_socket.seen("READY=1") == 1)
        again = [m for m in notify_socket.messages if m.startswith("READY=1")]
        assert parts.reloads == 1 and "STATUS=1 reloads" in again[0]
        assert notify_socket.seen("WATCHDOG=1") <= pinged + 1
        assert caplog.text.count("watchdog pings stopped") == 1
        parts.is_healthy = True
        assert wait_for(lambda: notify_socket.seen("WATCHDOG=1") >= pinged + 2)
    finally:
        shell.stop.set()
        loop.join(10)
    assert notify_socket.seen("STOPPING=1") == 1


def test_a_heartbeat_that_fails_is_said_once(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    parts = Parts(tmp_path)
    shell = Shell(parts.service())
    caplog.set_level(logging.DEBUG, logger="herald")
    parts.beat_fails = True
    for _ in range(3):
        shell.beat()  # never raises: a heartbeat must not stop the process
    warned = [r for r in caplog.records if "heartbeat not written" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "database is away" in warned[0].getMessage()
    parts.beat_fails = False
    shell.beat()
    parts.beat_fails = True
    shell.beat()  # away again after a good beat: said again
    warned = [r for r in caplog.records if "heartbeat not written" in r.getMessage()]
    assert [r.levelno for r in warned][-1] == logging.WARNING and parts.beats == 1


def test_a_stop_signal_stops_taking_work_before_the_loop_ends(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    shell = Shell(parts.service())
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), \
        signal.getsignal(signal.SIGHUP)
    shell.install()
    try:
        signal.raise_signal(signal.SIGHUP)
        assert shell.reload.is_set() and not shell.stop.is_set()
        signal.raise_signal(signal.SIGTERM)
        # inside the handler: the process takes no more work, whatever the loop is doing
        assert parts.stopping.is_set() and shell.stop.is_set()
        assert shell.run() == "SIGTERM"
    finally:
        for sig, handler in zip((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), before,
                                strict=True):
            signal.signal(sig, handler)


def test_saving_the_templates_file_is_enough(tmp_path: Path) -> None:
    """Between reloads the loop watches the templates file: a saved edit is in force
    without a signal, in run and serve alike."""
    parts = Parts(tmp_path)
    shell = Shell(parts.service())
    loop = threading.Thread(target=shell.run, daemon=True)
    loop.start()
    try:
        data = yaml.safe_load(parts.templates.path.read_text(encoding="utf-8"))
        data["walk_in"] = {"template_id": "WALKIN0001", "data": {"thing1": "walk-ins"}}
        parts.templates.path.write_text(yaml.safe_dump(data, allow_unicode=True))
        assert wait_for(lambda: "walk_in" in parts.templates.current.templates)
        assert parts.reloads == 0  # no SIGHUP went into it
    finally:
        shell.stop.set()
        loop.join(10)
