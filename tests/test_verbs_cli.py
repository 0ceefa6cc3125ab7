"""The command line itself: --config anywhere, --version, help on every option, the
database-only verbs with no credentials, run --once, the herald command and `make venv`."""

from __future__ import annotations

import argparse
import re
import tomllib

import pytest

from db.models import MsgList
from tests.bound import connect
from tests.support import APPID, ROOT, SECRET, write_config
from tests.verbs_support import herald, herald_child, queued

GOOD = '["Tea", 3, "shipped", "ok"]'


def test_config_before_or_after_the_verb(tmp_path, capsys):
    cfg = str(write_config(tmp_path))
    assert herald(capsys, "--config", cfg, "init-db").code == 0
    for argv in (["--config", cfg, "status"], ["status", "--config", cfg],
                 ["list", "--limit", "5", "--config", cfg], ["--config", cfg, "list"]):
        ran = herald(capsys, *argv)
        assert ran.code == 0, (argv, ran.text)
    # given after the verb it wins over the one before (the nearer one)
    ran = herald(capsys, "--config", str(tmp_path / "nope.yaml"), "status", "--config", cfg)
    assert ran.code == 0, ran.text
    ran = herald(capsys, "templates", "pull", "--app", "x", "--config", cfg)
    assert ran.code == 2 and "'x' is not a configured app" in ran.err


def test_version(capsys):
    from version import __version__

    ran = herald(capsys, "--version")
    assert ran.code == 0 and ran.out.strip() == f"herald {__version__}"


def _parsers(p: argparse.ArgumentParser, path: str = ""):
    yield path or "herald", p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}".strip())


def test_every_verb_and_option_has_help():
    import scheduler

    seen = set()
    for path, p in _parsers(scheduler.parser()):
        seen.add(path)
        assert p.description, path
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(c.help for c in action._choices_actions), path
                continue
            assert action.help and len(action.help) > 8, (path, action.dest)
    assert {"run", "serve", "demo", "init-db", "schema", "check", "templates pull",
            "enqueue", "status", "show", "list", "cancel", "retry", "render",
            "console-password"} <= seen


def test_help_runs_for_every_verb(capsys):
    for verb in ("run", "init-db", "check", "templates", "enqueue", "status", "show", "list",
                 "cancel", "retry", "render"):
        ran = herald(capsys, verb, "--help")
        assert ran.code == 0 and "usage:" in ran.out and "--config" in ran.out, verb


def test_database_verbs_run_with_no_credentials_in_the_environment(tmp_path):
    """A person with database access only: WECHAT_* unset, secret_file absent."""
    cfg = str(write_config(tmp_path, apps={"default": {"appid": "${WECHAT_APPID}",
                                                       "secret": "${WECHAT_SECRET}"}}))
    assert herald_child("init-db", "--config", cfg).code == 0
    ran = herald_child("enqueue", "order_status", "oU", "--params", GOOD, "--config", cfg)
    assert ran.code == 0, ran.text
    rid = str(queued(ran.out))
    fail = herald_child("enqueue", "order_status", "oU", "--params", "[1]", "--config", cfg)
    assert fail.code == 2 and "refused: params has 1 values" in fail.err
    for argv in (["status"], ["status", "--json"], ["show", rid], ["list"],
                 ["render", rid], ["retry", "--all", "--dry-run"], ["cancel", rid],
                 ["retry", rid], ["schema", "--dialect", "postgres"]):
        ran = herald_child(*argv, "--config", cfg)
        assert ran.code in (0, 1), (argv, ran.text)  # 1: retry of a cancelled row says why
        assert "WECHAT_APPID" not in ran.err, (argv, ran.err)
        assert "Traceback" not in ran.text
    assert "status cancelled: it was cancelled" in herald_child("retry", rid, "--config",
                                                               cfg).out
    for verb in (["check"], ["run", "--once"]):  # these need them, and say which
        ran = herald_child(*verb, "--config", cfg)
        assert ran.code == 2
        assert "apps.default.appid: environment variable WECHAT_APPID is not set" in ran.err


def test_run_once_sends_what_is_due_and_exits(tmp_path, sandbox):
    cfg = str(write_config(tmp_path, api_base=sandbox.url))
    assert herald_child("init-db", "--config", cfg).code == 0
    rid = queued(herald_child("enqueue", "order_status", "oU", "--params", GOOD,
                              "--config", cfg).out)
    later = queued(herald_child("enqueue", "order_status", "oU", "--params", GOOD,
                                "--send-at", "+1h", "--config", cfg).out)
    ran = herald_child("run", "--once", "--config", cfg)
    assert ran.code == 0, ran.text
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    with db.connection_context():
        assert MsgList.get_by_id(rid).status == "success"
        assert MsgList.get_by_id(later).status == "wait"
        # a one-shot run leaves no heartbeat behind
        assert db.execute_sql("SELECT COUNT(*) FROM herald_daemon").fetchone()[0] == 0
    assert "dispatch: claimed 1, sent 1" in ran.err


def test_run_once_exit_1_when_a_job_fails(tmp_path):
    cfg = str(write_config(tmp_path, database="postgresql://x@127.0.0.1:9/nope"))
    ran = herald_child("run", "--once", "--config", cfg)
    assert ran.code != 0 and "Traceback" not in ran.err
    assert "connection refused" in ran.err


# ----------------------------------------------------------------- set-up


def test_the_herald_command_is_a_console_script_of_scheduler_main():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"herald": "scheduler:main"}
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "version.__version__"}
    assert project["tool"]["setuptools"]["package-dir"] == {"": "."}


def test_make_venv_builds_the_runtime_without_dev_requirements_or_tests():
    make = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(VENV\)/\.runtime:(.*?)\n\n", make, re.S | re.M)
    assert rule, make
    body = rule.group(1)
    assert "requirements.txt" in body and "requirements-dev" not in body
    assert "pytest" not in body and "-e ." in body
    assert re.search(r"^venv: \$\(VENV\)/\.runtime$", make, re.M)
    assert re.search(r"^test: \$\(VENV\)/\.installed$", make, re.M)
    assert re.search(r"^demo: ", make, re.M)


def test_readme_uses_one_spelling_of_the_command():
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        assert "python scheduler.py" not in text, path.name
        assert not re.search(r"(?<!\.venv/bin/)(?<![\w/`])herald (status|show|list|check) ",
                             text), path.name
    assert re.search(r"\.venv/bin/herald (status|check|run)", (ROOT / "README.md").read_text())


@pytest.mark.parametrize("secret", [SECRET])
def test_no_verb_prints_the_secret(tmp_path, sandbox, capsys, secret):
    cfg = str(write_config(tmp_path, api_base=sandbox.url, appid=APPID, secret=secret))
    herald(capsys, "init-db", "--config", cfg)
    for argv in (["check", "--connect"], ["check", "--remote"], ["status"],
                 ["templates", "pull"]):
        ran = herald(capsys, *argv, "--config", cfg)
        assert secret not in ran.text, argv


@pytest.mark.parametrize("setting", ["web", "console"])
def test_serve_names_the_address_it_could_not_listen_on(tmp_path, setting):
    """A port another process holds: serve exits 1 naming the setting and the address
    (the socket's own "Address already in use" names neither)."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        listen = {"web": {"listen": None}, "console": {"listen": None}}
        listen[setting] = {"listen": f"127.0.0.1:{port}"}
        cfg = str(write_config(tmp_path, **listen))
        herald_child("init-db", "--config", cfg)
        ran = herald_child("serve", "--config", cfg, timeout=60)
    assert ran.code == 1, ran.text
    assert f"cannot listen: [Errno 98] {setting}.listen 127.0.0.1:{port}: Address already " \
           "in use" in ran.err, ran.err
