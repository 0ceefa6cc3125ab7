"""Plumbing shared by the tests and the benchmarks: configs as a user writes them, the
WeChat sandbox and Herald daemons as child processes, and waiting for a condition.

No pytest here: bench/ imports it too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Self

import yaml

from db.connection import init_schema
from db.models import TABLE_NAMES
from tests.bound import connect

ROOT = Path(__file__).resolve().parent.parent
APPID, SECRET = "wxtest0000000001", "test-secret-0123456789"


def drop_herald_tables(url: str) -> None:
    """Drop every Herald table (and PostgreSQL's trigger function) in `url`'s database,
    so a test or a benchmark starts from an empty database."""
    db = connect(url)
    with db.connection_context():
        for table in TABLE_NAMES:
            db.execute_sql(f"DROP TABLE IF EXISTS {table}")
        if url.startswith("postgres"):
            db.execute_sql("DROP FUNCTION IF EXISTS herald_notify() CASCADE")
    db.close()


def fresh_db(url: str) -> Any:
    """`url`'s database emptied and created again with the current schema."""
    drop_herald_tables(url)
    db = connect(url)
    init_schema(db)
    return db


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; True if it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without HERALD_*/WECHAT_* (HERALD_DATABASE would override every
    config's database: an operator's shell must not leak into a test), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "WECHAT_"))}
    env.update(extra)
    return env


def config_data(*, folder: Path, api_base: str = "http://127.0.0.1:9", appid: str = APPID,
                secret: str = SECRET, **overrides: Any) -> dict[str, Any]:
    """config.yaml's content for a test or benchmark: SQLite in `folder`, the sandbox's
    app, metrics off. A mapping in `overrides` is merged into the section it names."""
    data: dict[str, Any] = {
        "database": f"sqlite:///{folder / 'herald.db'}",
        "api_base": api_base,
        "templates": str(ROOT / "templates.yaml"),
        "apps": {"default": {"appid": appid, "secret": secret}},
        "metrics": {"listen": None},
        # short: a failing test ends quickly, and the short leases tests use stay valid
        # (a lease must be at least 3 x http.timeout)
        "http": {"timeout": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_config(folder: Path, *, name: str = "config.yaml", **kw: Any) -> Path:
    """Write config_data(folder=folder, **kw) as YAML; returns its path."""
    path = folder / name
    path.write_text(yaml.safe_dump(config_data(folder=folder, **kw), allow_unicode=True))
    return path


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Signal a child and wait for it; SIGKILL if it does not go in `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class SandboxProcess:
    """`python -m sandbox.wechat` as a child process, so its CPU does not share the GIL
    of the test or benchmark that drives it. A context manager; stop() also works."""

    def __init__(self, workdir: Path, *, latency: float = 0.0, appid: str = APPID,
                 secret: str = SECRET) -> None:
        self.latency = latency
        port_file = workdir / "sandbox.port"
        self._log: IO[str] = open(workdir / "sandbox.log", "w")  # noqa: SIM115 - stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.wechat", "--port", "0", "--port-file",
             str(port_file), "--latency", str(latency), "--app", f"{appid}:{secret}"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )
        if not wait_for(lambda: port_file.exists() or self.proc.poll() is not None, 20):
            self.stop()
            raise RuntimeError("sandbox did not start within 20 s")
        if self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"sandbox exited: {(workdir / 'sandbox.log').read_text()}")
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def __enter__(self) -> Self:  # a subclass (bench's) enters as itself
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        """The sandbox's control API: GET stats/accepted, POST reset/config/inject..."""
        data = json.dumps(body or {}).encode() if method == "POST" else None
        req = urllib.request.Request(f"{self.url}/_sandbox/{name}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self.call("GET", "stats")

    def reset(self) -> None:
        self.call("POST", "reset")

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


class DaemonProcess:
    """One `scheduler.py --config CONFIG run` child, its output in a log file (a pipe
    nobody reads would fill up and block the daemon's logging, then its dispatch)."""

    READY = re.compile(r"herald running as (\S+): \d+ apps")

    def __init__(self, config: Path, log_path: Path, name: str = "daemon") -> None:
        self.config = config
        self.log_path = log_path
        self.name = name
        self.daemon_id = ""  # what this daemon writes in claimed_by, from its start-up line
        self.proc: subprocess.Popen | None = None
        self._log: IO[str] | None = None

    def start(self) -> DaemonProcess:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scheduler.py"), "--config", str(self.config), "run"],
            cwd=ROOT, env=clean_env(), stdout=self._log, stderr=subprocess.STDOUT,
        )
        return self

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait for the start-up line; returns (and keeps) the daemon's id."""

        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            m = self.READY.search(self.text())
            if m:
                self.daemon_id = m.group(1)
            return bool(m)

        if not wait_for(ready, timeout, step=0.1):
            raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")
        return self.daemon_id

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and return the exit code (SIGKILL if it does not end in `timeout` s)."""
        assert self.proc is not None
        return _stop(self.proc, sig, timeout)

    def close(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class ServeProcess(DaemonProcess):
    """One `scheduler.py --config CONFIG serve` child (the web side)."""

    READY = re.compile(r"herald serve listening: (.*)")

    def start(self) -> ServeProcess:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scheduler.py"), "--config", str(self.config), "serve"],
            cwd=ROOT, env=clean_env(), stdout=self._log, stderr=subprocess.STDOUT,
        )
        return self

    def urls(self) -> dict[str, str]:
        """name -> base URL of each listener, from the start-up line."""
        m = self.READY.search(self.text())
        if not m:
            return {}
        out = {}
        for part in m.group(1).split(", "):
            name, _, url = part.partition(" on ")
            out[name] = url
        return out
