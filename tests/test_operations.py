"""The daemon as an operator sees it: sd_notify, watchdog, /metrics, SIGHUP reload."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from db.connection import init_schema
from db.models import MsgList
from reload import reload_config
from tests.bound import connect
from tests.conftest import ROOT, insert_sql
from tests.support import wait_for, write_config

pytestmark = pytest.mark.slow
GOOD = '["Tea", 3, "shipped", "ok"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket the test binds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def seen(self, line: str) -> int:
        self.drain()
        return sum(1 for m in self.messages if line in m.split("\n"))


def status_of(db, rid: int) -> str:
    with db.connection_context():
        return MsgList.get_by_id(rid).status


@pytest.fixture
def open_sandbox():
    """A sandbox that accepts any template_id (the test adds one at run time)."""
    from sandbox.wechat import Sandbox
    from tests.conftest import APPID, SECRET

    with Sandbox(apps={APPID: SECRET}) as sb:
        yield sb


def test_notify_watchdog_metrics_and_sighup_reload(tmp_path, open_sandbox):
    sandbox = open_sandbox
    templates = tmp_path / "templates.yaml"
    shutil.copy(ROOT / "templates.yaml", templates)
    port = free_port()
    cfg = write_config(tmp_path, api_base=sandbox.url, templates=str(templates),
                       metrics={"listen": f"127.0.0.1:{port}"},
                       jobs={"dispatch": {"every": "1s"}})
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    listener = NotifyListener(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scheduler.py"), "--config", str(cfg),
                             "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: listener.seen("READY=1") >= 1), listener.messages
        assert any(m.startswith("READY=1") and "STATUS=" in m for m in listener.messages)
        assert wait_for(lambda: listener.seen("WATCHDOG=1") >= 2, timeout=5)

        # real sends, then a scrape
        with db.connection_context():
            ok = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
                  for i in range(3)]
            bad = insert_sql(db, template="order_status", openid="oBad", params="[")
        assert wait_for(lambda: all(status_of(db, i) == "success" for i in ok))
        assert wait_for(lambda: status_of(db, bad) == "fail")
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(text) for s in fam.samples}
        assert samples[("herald_messages_finished_total",
                        (("errcode", "0"), ("status", "success"),
                         ("template", "order_status")))] == 3
        assert samples[("herald_messages_finished_total",
                        (("errcode", ""), ("status", "fail"),
                         ("template", "order_status")))] == 1
        assert samples[("herald_queue_rows", (("status", "success"),))] == 3
        assert samples[("herald_send_duration_seconds_count", ())] >= 3
        assert 7000 < samples[("herald_token_expiry_seconds", (("app", "default"),))] <= 7200
        assert samples[("herald_job_runs_total", (("job", "dispatch"), ("outcome", "ok")))] >= 1

        # SIGHUP: a new template is in force without a restart
        data = yaml.safe_load(templates.read_text())
        data["pickup_ready"] = {"template_id": "PICKUP0001", "params": ["shop"],
                                "data": {"thing1": "{{ shop }}"}}
        templates.write_text(yaml.safe_dump(data, allow_unicode=True))
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: listener.seen("RELOADING=1") >= 1)
        assert wait_for(lambda: listener.seen("READY=1") >= 2)
        with db.connection_context():
            new = insert_sql(db, template="pickup_ready", openid="oP", params='["North St"]')
        assert wait_for(lambda: status_of(db, new) == "success")
        assert sandbox.accepted[-1]["template_id"] == "PICKUP0001"

        # no signal at all: saving the file is enough (its mtime is watched)
        data["walk_in"] = {"template_id": "WALKIN0001", "data": {"thing1": "walk-ins"}}
        templates.write_text(yaml.safe_dump(data, allow_unicode=True))
        with db.connection_context():
            walk = insert_sql(db, template="walk_in", openid="oW")
        assert wait_for(lambda: status_of(db, walk) in ("success", "fail"), timeout=20)
        assert status_of(db, walk) == "success"

        # a broken edit: reported with file and line, the last good set stays
        templates.write_text(templates.read_text() + "broken:\n  template_id: X\n  data: [\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: listener.seen("READY=1") >= 3)
        with db.connection_context():
            again = insert_sql(db, template="pickup_ready", openid="oQ", params='["South"]')
        assert wait_for(lambda: status_of(db, again) == "success")

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert listener.seen("STOPPING=1") == 1
    # SIGHUP refuses the whole reload (reload.py); the file watch says it too, if it
    # saw the edit first
    assert ("config not reloaded, the running configuration stays: templates" in err
            or "templates not reloaded, keeping the last good set" in err)
    assert "templates.yaml:" in err  # names file and line


def test_sighup_config_reload_applies_every_change_or_none(tmp_path, db, sandbox,
                                                           runtime_factory, caplog):
    from config import load_config
    from runtime import Runtime

    path = write_config(tmp_path, api_base=sandbox.url)
    rt = Runtime.build(load_config(path), db)

    class Jobs:
        calls: list = []
        sizes: list = []

        def reschedule(self, name, every):
            self.calls.append((name, every))

        def resize(self, workers):
            self.sizes.append(workers)

    data = yaml.safe_load(path.read_text())
    data["retry"] = {"max_attempts": 9}
    data["dispatch"] = {"rate_limit": 5, "workers": 3}
    data["jobs"] = {"dispatch": {"every": "10s"}}
    data["api_base"] = "http://127.0.0.1:1"
    path.write_text(yaml.safe_dump(data))
    jobs = Jobs()
    caplog.set_level("INFO", logger="herald.reload")
    assert reload_config(rt, jobs) is True
    assert rt.config.retry.max_attempts == 9
    assert rt.limiters.rate == 5
    assert rt.config.dispatch.workers == 3 and jobs.sizes == [3]
    assert rt.config.api_base == "http://127.0.0.1:1" == rt.client.api_base
    assert ("dispatch", 10.0) in jobs.calls
    assert "config reloaded" in caplog.text

    data["database"] = f"sqlite:///{tmp_path / 'other.db'}"
    data["retry"] = {"max_attempts": 2}
    path.write_text(yaml.safe_dump(data))
    assert reload_config(rt, jobs) is False
    assert rt.config.retry.max_attempts == 9  # the live change waits with the rest
    assert "database changed and need a restart" in caplog.text

    path.write_text("retry: {max_attempts: lots}\n")
    assert reload_config(rt, jobs) is False
    assert rt.config.retry.max_attempts == 9
    assert "retry.max_attempts" in caplog.text
    rt.close()
