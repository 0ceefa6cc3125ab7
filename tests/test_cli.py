"""The CLI verbs as an operator runs them: real subprocesses, exit codes, messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from db.connection import ddl_text
from db.schema import VERSION
from tests.support import ROOT, SECRET, DaemonProcess, clean_env, wait_for, write_config


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scheduler.py"), *args], cwd=ROOT,
                          env=clean_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(
    ("text", "key", "env"),
    [
        ("dispatch:\n  wokers: 4\n", "dispatch.wokers", {"WECHAT_APPID": "wx1",
                                                         "WECHAT_SECRET": "s"}),
        ("jobs:\n  dispatch: {every: 5 minutes}\n", "jobs.dispatch.every",
         {"WECHAT_APPID": "wx1", "WECHAT_SECRET": "s"}),
        ("apps:\n  default: {secret: s}\n", "apps.default.appid", {}),
        ("database: sqlite:///x.db\n", "WECHAT_APPID", {}),
    ],
)
def test_config_errors_exit_2_naming_the_key(tmp_path, text, key, env):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    for verb in ("check", "run"):
        res = cli("--config", str(path), verb, env=env)
        assert res.returncode == 2, res.stderr
        assert key in res.stderr
        assert "Traceback" not in res.stderr


def test_check_ok_and_config_from_env(tmp_path):
    path = write_config(tmp_path)
    res = cli("check", env={"HERALD_CONFIG": str(path)})
    assert res.returncode == 0, res.stderr
    assert "templates 2" in res.stdout
    assert SECRET not in res.stdout + res.stderr
    assert "warning: console.listen is set but console.users is empty" in res.stderr
    exposed = write_config(tmp_path, name="exposed.yaml", metrics={"listen": "0.0.0.0:9464"},
                           console={"listen": None})
    res = cli("--config", str(exposed), "check")
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "warning: metrics.listen 0.0.0.0:9464 is reachable from other hosts; the metrics "
        "endpoint has no authentication (bind 127.0.0.1, or firewall the port)"]


def test_check_reports_a_broken_template_file(tmp_path):
    bad = tmp_path / "templates.yaml"
    bad.write_text("x:\n  template_id: T\n  data: {wat1: hi}\n")
    path = write_config(tmp_path, templates=str(bad))
    res = cli("--config", str(path), "check")
    assert res.returncode == 2
    assert "x.data.wat1" in res.stderr and "templates.yaml:" in res.stderr


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_schema_prints_the_reference_ddl(dialect):
    res = cli("schema", "--dialect", dialect)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ddl_text(dialect)


def test_init_db_enqueue_status_render(tmp_path):
    path = write_config(tmp_path)
    assert cli("--config", str(path), "init-db").returncode == 0
    assert cli("--config", str(path), "init-db").returncode == 0  # idempotent
    res = cli("--config", str(path), "enqueue", "order_status", "oUser",
              "--params", '["Tea", 3, "shipped", "ok"]', "--priority", "2", "--send-at", "+1h")
    assert res.returncode == 0, res.stderr
    rid = int(re.match(r"queued #(\d+): template order_status, openid oUser, app default, "
                       r"send_at .* UTC \(in (59 min|1 h)\), priority 2$", res.stdout.strip())[1])
    res = cli("--config", str(path), "render", str(rid))
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout[res.stdout.index("{"):])
    assert body["data"]["amount3"] == {"value": "3元"} and body["touser"] == "oUser"
    assert "access_token=<token" in res.stdout
    res = cli("--config", str(path), "render", "--template", "order_status",
              "--params", '["Tea"]')
    assert res.returncode == 1 and "missing goods_price" in res.stderr
    res = cli("--config", str(path), "status", "--json")
    report = json.loads(res.stdout)
    assert report["counts"]["wait"] == 1
    assert report["oldest_due_wait_seconds"] is None  # scheduled an hour ahead
    res = cli("--config", str(path), "status")
    assert "wait" in res.stdout and res.returncode == 0


def test_database_verbs_need_no_app_credentials(tmp_path):
    path = write_config(tmp_path, apps={"default": {"appid": "${WECHAT_APPID}",
                                                    "secret_file": "wechat_secret"}})
    for verb in (["init-db"], ["enqueue", "order_status", "oUser", "--params",
                               '["Tea", 3, "shipped", "ok"]'], ["status"],
                 ["retry", "--all", "--dry-run"]):
        res = cli("--config", str(path), *verb)
        assert res.returncode == 0, (verb, res.stderr)
    for verb in ("check", "run"):  # these need them, and say which are missing
        res = cli("--config", str(path), verb)
        assert res.returncode == 2
        assert "apps.default.appid: environment variable WECHAT_APPID is not set" in res.stderr
        assert "apps.default.secret_file: 'wechat_secret' not found" in res.stderr


def test_enqueue_rejects_bad_params_and_duplicate_dedup_key(tmp_path):
    path = write_config(tmp_path)
    cli("--config", str(path), "init-db")
    res = cli("--config", str(path), "enqueue", "order_status", "o", "--params", "[")
    assert res.returncode == 2 and "--params is not valid JSON" in res.stderr
    good = ["--params", '["Tea", 3, "shipped", "ok"]']
    ok = cli("--config", str(path), "enqueue", "order_status", "o", *good,
             "--dedup-key", "order-1")
    assert ok.returncode == 0
    dup = cli("--config", str(path), "enqueue", "order_status", "o", *good,
              "--dedup-key", "order-1")
    assert dup.returncode == 1 and "UNIQUE" in dup.stderr.upper()


def test_every_verb_has_help():
    for verb in ("run", "demo", "init-db", "schema", "check", "enqueue", "status", "render",
                 "retry"):
        res = cli(verb, "--help")
        assert res.returncode == 0, verb
        assert "usage:" in res.stdout


def test_run_creates_the_schema_on_first_start(tmp_path):
    """systemd's fresh StateDirectory: the service creates its own SQLite file."""
    path = write_config(tmp_path)
    daemon = DaemonProcess(path, tmp_path / "daemon.log").start()
    try:
        assert wait_for(lambda: (tmp_path / "herald.db").exists())
        time.sleep(1)
        assert daemon.stop(timeout=20) == 0, daemon.tail()
    finally:
        daemon.close()
    assert f"created the schema (version {VERSION})" in daemon.text()
    res = cli("--config", str(path), "status", "--json")
    assert json.loads(res.stdout)["counts"]["wait"] == 0
