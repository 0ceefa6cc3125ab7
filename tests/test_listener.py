"""web.server.Listener: stopping a waitress listener never writes to a closed (or
reused) descriptor, whatever the loop thread is doing at that moment, and leaks none.

The cause of the old flake (EBADF from trigger.pull_trigger in Listener.stop): waitress's
pull_trigger(thunk) appends the thunk before it writes the wake-up byte; a loop thread
woken by a worker's byte can run the thunk in between, and the old thunk (close_all)
closed the trigger itself. The first test forces exactly that interleaving.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest
import requests

from tests.support import wait_for
from web.server import Listener
from web.wsgi import text


def slow_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    time.sleep(0.002)
    return text("ok" * 2000)(environ, start_response)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stop_survives_the_loop_running_its_thunk_before_the_wake_up_byte() -> None:
    listener = Listener(slow_app, "127.0.0.1", 0, name="race", threads=2).start()
    assert requests.get(listener.url, timeout=5).text.startswith("ok")
    trigger = listener.server.trigger
    real_pull = trigger._physical_pull

    def late_pull() -> None:
        # another thread's byte wakes the loop, which runs the queued thunk (stop's)
        # before this thread writes its own byte: the interleaving seen in CI
        os.write(trigger.trigger, b"x")
        assert wait_for(lambda: not trigger.thunks, 5, 0.001)
        real_pull()

    trigger._physical_pull = late_pull
    listener.stop()  # the old stop raised OSError(EBADF) here
    assert not listener.alive
    assert trigger._closed  # and the trigger was closed after all, by stop


def test_stop_is_idempotent_and_closes_a_listener_never_started() -> None:
    idle = Listener(slow_app, "127.0.0.1", 0, name="idle")
    port = idle.port
    idle.stop()
    idle.stop()
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    running = Listener(slow_app, "127.0.0.1", 0, name="twice").start()
    running.stop()
    running.stop()
    assert not running.alive


@pytest.mark.slow
def test_stopping_listeners_repeatedly_under_load(caplog) -> None:
    """40 listeners, each stopped while six keep-alive clients hammer it: every stop
    returns without an exception, its thread ends, waitress logs no error, and the
    process holds no more descriptors than before."""
    errors: list[str] = []
    hook = threading.excepthook
    threading.excepthook = lambda a: errors.append(f"{a.thread}: {a.exc_value!r}")

    def client(url: str, stop: threading.Event) -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    s.get(url, timeout=2)
                except requests.RequestException:
                    pass

    # warm up what the first listener loads (imports, requests' pools)
    warm = Listener(slow_app, "127.0.0.1", 0, name="warm").start()
    requests.get(warm.url, timeout=5)
    warm.stop()
    before = open_fds()
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(40):
                listener = Listener(slow_app, "127.0.0.1", 0, name=f"load{i}",
                                    threads=4).start()
                stop = threading.Event()
                clients = [threading.Thread(target=client, args=(listener.url, stop))
                           for _ in range(6)]
                for c in clients:
                    c.start()
                time.sleep(0.03)
                try:
                    listener.stop(timeout=5)
                except Exception as exc:  # noqa: BLE001 - what this test looks for
                    errors.append(f"stop {i}: {exc!r}")
                if listener.alive:
                    errors.append(f"stop {i}: the loop thread still runs")
                stop.set()
                for c in clients:
                    c.join(10)
    finally:
        threading.excepthook = hook
    logged = [r.getMessage() for r in caplog.records
              if r.name.startswith("waitress") and r.name != "waitress.queue"
              and r.levelno >= logging.WARNING]
    assert errors == [] and logged == []
    # every listener's sockets and trigger pipe are closed (a little slack for the
    # descriptors the interpreter or a late client socket opens on its own)
    assert wait_for(lambda: open_fds() <= before + 2, 10), (before, open_fds())
