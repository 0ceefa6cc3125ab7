"""notify.py: sd_notify datagrams on real sockets, the watchdog interval, Heartbeat."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from notify import Heartbeat, notify, watchdog_interval


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound in tmp_path, named by NOTIFY_SOCKET (like systemd's)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_sends_one_datagram_with_all_lines(path_socket: socket.socket) -> None:
    assert notify("READY=1", "STATUS=running: 1 app") is True
    assert path_socket.recv(4096) == b"READY=1\nSTATUS=running: 1 app"


def test_notify_each_call_is_its_own_datagram(path_socket: socket.socket) -> None:
    for message in ("WATCHDOG=1", "RELOADING=1", "READY=1", "STOPPING=1"):
        assert notify(message)
    received = [path_socket.recv(4096) for _ in range(4)]
    assert received == [b"WATCHDOG=1", b"RELOADING=1", b"READY=1", b"STOPPING=1"]


def test_notify_utf8_status(path_socket: socket.socket) -> None:
    assert notify("STATUS=发送中")
    assert path_socket.recv(4096).decode("utf-8") == "STATUS=发送中"


def test_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"herald-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)  # what systemd means by a leading '@'
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert notify("READY=1") is False


def test_notify_dead_socket_returns_false_and_logs_debug(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens: ECONNREFUSED
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    caplog.set_level("DEBUG", logger="herald.notify")
    assert notify("WATCHDOG=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "never-existed.sock"))
    assert notify("WATCHDOG=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "@herald-nobody-" + uuid.uuid4().hex)
    assert notify("WATCHDOG=1") is False
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * 3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"}, None),  # someone else's
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_interval_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() == 10.0


def test_heartbeat_idle_is_always_healthy() -> None:
    hb = Heartbeat(now=0.0)
    assert hb.healthy(1_000_000.0, limit=60)
    assert not hb.is_busy


def test_heartbeat_busy_run_healthy_while_it_beats() -> None:
    hb = Heartbeat(now=0.0)
    hb.busy(True, now=1000.0)  # the clock starts with the run, not with the last idle beat
    assert hb.healthy(1059.0, limit=60)
    assert hb.healthy(1060.0, limit=60)
    assert not hb.healthy(1060.5, limit=60)  # busy without a beat for more than the limit
    hb.beat(now=1061.0)
    assert hb.healthy(1100.0, limit=60)
    assert not hb.healthy(1122.0, limit=60)
    hb.busy(False)
    assert hb.healthy(5000.0, limit=60)  # the run ended: idle again


def test_heartbeat_hung_run_stays_unhealthy_until_it_beats_or_ends() -> None:
    hb = Heartbeat()
    hb.busy(True, now=10.0)
    for t in (71.0, 100.0, 1000.0):
        assert not hb.healthy(t, limit=60)
    hb.beat(now=1000.0)
    assert hb.healthy(1001.0, limit=60)


def test_heartbeat_overlapping_runs_nest() -> None:
    hb = Heartbeat()
    hb.busy(True, now=0.0)
    hb.busy(True, now=50.0)  # a second run while one is busy keeps the older clock
    assert not hb.healthy(61.0, limit=60)
    hb.busy(False)
    assert hb.is_busy and not hb.healthy(61.0, limit=60)
    hb.busy(False)
    assert not hb.is_busy and hb.healthy(61.0, limit=60)
    hb.busy(False)  # an extra end never makes the count negative
    hb.busy(True, now=100.0)
    assert hb.is_busy and hb.healthy(150.0, limit=60)


def test_heartbeat_default_clock_is_monotonic() -> None:
    import time

    hb = Heartbeat()
    hb.busy(True)
    hb.beat()
    assert hb.healthy(time.monotonic(), limit=5)
    assert not hb.healthy(time.monotonic() + 10, limit=5)
