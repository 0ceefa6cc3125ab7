"""SIGHUP reloads, in process: every setting the reload accepts is in force afterwards
(the senders rebuilt), and a reload with a setting that needs a restart, a bad file or
templates that would strand waiting rows changes nothing at all. The daemons under
real signals: tests/test_reload_daemon.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import clock
from config import load_config
from config.schema import DECLARATIONS
from config.spec import Key
from jobs import dispatch
from logs import SECRETS, redact
from reload import RUN_KEYS, SERVE_KEYS, changed_keys, flatten, reload_run, reload_serve
from runtime import Runtime
from sandbox.sms import SmsSandbox
from sandbox.webhook import WebhookSandbox
from tests.channel_support import (
    HOOK_SECRET,
    PARAMS,
    SMS_TID,
    overrides,
    with_official_account,
    write_templates,
)
from tests.conftest import insert_sql, row
from tests.support import config_data

NEW_HOOK_SECRET = "hook-secret-after-the-reload-42"
NEW_SMS_KEY = "sms-secret-key-after-the-reload-0001"


class FakeDaemon:
    def __init__(self) -> None:
        self.rescheduled: list[tuple[str, float]] = []
        self.resized: list[int] = []

    def reschedule(self, name: str, every: float) -> None:
        self.rescheduled.append((name, every))

    def resize(self, workers: int) -> None:
        self.resized.append(workers)


class Recorder:
    def __init__(self) -> None:
        self.reloads: list[bool] = []

    def finished(self, *a: Any) -> None: ...
    def send_duration(self, *a: Any) -> None: ...
    def job_run(self, *a: Any) -> None: ...

    def config_reload(self, applied: bool) -> None:
        self.reloads.append(applied)


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """A reload of log.* reconfigures logging: put it back after each test."""
    root = logging.getLogger()
    names = ("peewee", "urllib3", "apscheduler")
    saved = (root.level, list(root.handlers), [logging.getLogger(n).level for n in names])
    yield
    for h in list(root.handlers):
        if h not in saved[1]:
            root.removeHandler(h)
    root.setLevel(saved[0])
    for n, level in zip(names, saved[2], strict=True):
        logging.getLogger(n).setLevel(level)


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}) as sb:
        yield sb


@pytest.fixture
def hook() -> Iterator[WebhookSandbox]:
    with WebhookSandbox(HOOK_SECRET) as sb:
        yield sb


@pytest.fixture
def setup(tmp_path, db, sandbox, sms_sandbox, hook):
    """A config file and templates as an operator has them, a Runtime built from them,
    and `edit(fn)`: change the file's data with fn and reload."""
    with_official_account(sandbox)
    templates = write_templates(tmp_path, hook.url + "/hook")
    path = tmp_path / "config.yaml"
    data = config_data(folder=tmp_path, api_base=sandbox.url,
                       **overrides(templates, sms_sandbox.url))
    data["database"] = f"sqlite:///{db.database}"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    rt = Runtime.build(load_config(path, strict_secrets=False), db)
    rt.metrics = Recorder()
    daemon = FakeDaemon()

    class Setup:
        def __init__(self) -> None:
            self.rt, self.daemon, self.path, self.templates = rt, daemon, path, templates

        def data(self) -> dict[str, Any]:
            return yaml.safe_load(path.read_text())

        def edit(self, fn: Callable[[dict[str, Any]], None]):
            d = self.data()
            fn(d)
            path.write_text(yaml.safe_dump(d, allow_unicode=True))
            return reload_run(rt, daemon)

    yield Setup()
    rt.close()


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(d: dict[str, Any]) -> None:
        node = d
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return fn


# (what changes, how, applied?) - the reload matrix of `run`
RUN_MATRIX: list[tuple[str, Callable[[dict[str, Any]], None], bool]] = [
    ("sms.sign_name", _set("sms", "sign_name", value="新签名"), True),
    ("sms.secret_key", _set("sms", "secret_key", value=NEW_SMS_KEY), True),
    ("sms.secret_id", _set("sms", "secret_id", value="AKIDafterreload01"), True),
    ("sms.region", _set("sms", "region", value="ap-beijing"), True),
    ("sms.endpoint", _set("sms", "endpoint", value="http://127.0.0.1:9"), True),
    ("sms.sdk_app_id", _set("sms", "sdk_app_id", value="1400000009"), True),
    ("sms.callback_token", _set("sms", "callback_token", value="c" * 20), True),
    ("http.timeout", _set("http", "timeout", value="3s"), True),
    ("api_base", _set("api_base", value="http://127.0.0.1:9"), True),
    ("dispatch.rate_limit", _set("dispatch", "rate_limit", value=5), True),
    ("dispatch.workers", _set("dispatch", "workers", value=3), True),
    ("dispatch.batch_size", _set("dispatch", "batch_size", value=7), True),
    ("dispatch.lease", _set("dispatch", "lease", value="2m"), True),
    ("dispatch.on_stale", _set("dispatch", "on_stale", value="fail"), True),
    ("retry.max_attempts", _set("retry", "max_attempts", value=9), True),
    ("retry.backoff.base", _set("retry", "backoff", "base", value="10s"), True),
    ("retry.daily_quota_reset", _set("retry", "daily_quota_reset", value="01:00+08:00"), True),
    ("retention.success", _set("retention", "success", value="7d"), True),
    ("jobs.dispatch.every", _set("jobs", "dispatch", "every", value="10s"), True),
    ("log.level", _set("log", "level", value="WARNING"), True),
    ("log.format", _set("log", "format", value="json"), True),
    ("log.sql", _set("log", "sql", value=True), True),
    ("grants.on_missing", _set("grants", "on_missing", value="hold"), True),
    ("apps.default.secret", _set("apps", "default", "secret", value="a-new-app-secret-01"),
     True),
    ("apps.default.push", _set("apps", "default", "push", value={"token": "pushTok1"}), True),
    ("web.listen", _set("web", "listen", value="127.0.0.1:18080"), True),
    ("console.listen", _set("console", "listen", value="127.0.0.1:19465"), True),
    ("database", _set("database", value="sqlite:////tmp/elsewhere.db"), False),
    ("metrics.listen", _set("metrics", "listen", value="127.0.0.1:19464"), False),
    ("receipts.missing_after", _set("receipts", "missing_after", value="1h"), False),
    ("apps.default.appid", _set("apps", "default", "appid", value="wxother0000000001"), False),
    ("apps.default.token_source", _set("apps", "default", "token_source", value="legacy"),
     False),
    ("apps.shop", _set("apps", "shop", value={"appid": "wxshop", "secret": "shop-secret"}),
     False),
]


@pytest.mark.parametrize(("key", "change", "applied"), RUN_MATRIX, ids=[m[0] for m in RUN_MATRIX])
def test_run_reload_matrix(setup, key, change, applied, caplog):
    before = flatten(setup.rt.config)
    with caplog.at_level(logging.INFO, logger="herald.reload"):
        outcome = setup.edit(change)
    wanted = flatten(load_config(setup.path, strict_secrets=False))
    assert any(k == key or k.startswith(key + ".") for k in outcome.changed), outcome
    assert outcome.applied is applied, outcome
    assert setup.rt.metrics.reloads == [applied]
    if applied:
        assert flatten(setup.rt.config) == wanted  # every change in force
        assert "config reloaded" in caplog.text and key in caplog.text
    else:
        assert flatten(setup.rt.config) == before  # none of it
        assert "config reloaded" not in caplog.text
        warning = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warning and key in warning[0].getMessage()
        assert "need a restart" in warning[0].getMessage()


def test_a_refused_reload_keeps_even_the_live_changes(setup, sms_sandbox):
    old_sign = setup.rt.senders["sms"].sign_name

    def both(d: dict[str, Any]) -> None:
        d["sms"]["sign_name"] = "新签名"
        d["database"] = "sqlite:////tmp/elsewhere.db"
        d["dispatch"] = {"rate_limit": 3}

    outcome = setup.edit(both)
    assert not outcome.applied and outcome.restart == ["database"]
    assert setup.rt.senders["sms"].sign_name == old_sign
    assert setup.rt.config.sms.sign_name == old_sign and setup.rt.limiters.rate is None
    rid = insert_sql(setup.rt.db, template="order_sms", openid="o1", phone="+8613800138000",
                     params=PARAMS)
    dispatch.run(setup.rt)
    assert row(rid).status == "success"
    assert sms_sandbox.accepted[-1]["sign_name"] == old_sign


def test_the_senders_send_with_what_the_reload_brought(setup, sms_sandbox, hook, sandbox):
    """New SMS sign name and keys, a new webhook secret, a new timeout: the next sends
    use them (the sandboxes verify the signatures with the new keys)."""
    old_client = setup.rt.client
    sms_sandbox.secret_key = NEW_SMS_KEY
    hook.secret = NEW_HOOK_SECRET
    setup.templates.write_text(setup.templates.read_text().replace(HOOK_SECRET,
                                                                   NEW_HOOK_SECRET))

    def change(d: dict[str, Any]) -> None:
        d["sms"].update(sign_name="新签名", secret_key=NEW_SMS_KEY)
        d["http"]["timeout"] = "4s"
        d["dispatch"] = {"rate_limit": 50, "workers": 5}
        d["jobs"] = {"dispatch": {"every": "7s"}}

    outcome = setup.edit(change)
    assert outcome.applied, outcome
    rt = setup.rt
    assert rt.client is not old_client and rt.client.timeout == (4.0, 4.0)
    assert rt.senders["sms"].sign_name == "新签名"
    assert rt.senders["webhook"].total == 4.0
    assert rt.limiters.rate == 50
    assert setup.daemon.resized == [5] and ("dispatch", 7.0) in setup.daemon.rescheduled
    assert rt.tokens.client is rt.client  # the token calls go through the new client too
    assert rt.retired and old_client in rt.retired[0][1]  # closed once no send needs it
    sms = insert_sql(rt.db, template="order_sms", openid="o1", phone="+8613800138000",
                     params=PARAMS)
    hooked = insert_sql(rt.db, template="order_hook", openid="o2", params=PARAMS)
    dispatch.run(rt)
    assert row(sms).status == "success", row(sms).error
    assert row(hooked).status == "success", row(hooked).error
    assert sms_sandbox.accepted[-1]["sign_name"] == "新签名"
    assert len(hook.deliveries) == 1 and not hook.rejected
    # the old webhook secret left the redaction set, the new one is in it
    assert redact(NEW_HOOK_SECRET) == "<redacted>" and NEW_SMS_KEY not in redact(NEW_SMS_KEY)
    assert HOOK_SECRET not in SECRETS.group("templates")


def test_a_new_app_secret_is_used_by_the_next_token_fetch(setup, sandbox):
    sandbox.apps["wxtest0000000001"] = "a-new-app-secret-01"  # rotated in WeChat too
    outcome = setup.edit(_set("apps", "default", "secret", value="a-new-app-secret-01"))
    assert outcome.applied
    rt = setup.rt
    rid = insert_sql(rt.db, template="order_status", openid="oS", params=PARAMS)
    dispatch.run(rt)
    assert row(rid).status == "success", row(rid).error
    assert rt.tokens.fetches == 1 and sandbox.token_calls["stable"] == 1


def test_a_config_that_does_not_validate_is_refused(setup, caplog):
    before = flatten(setup.rt.config)
    setup.path.write_text("retry: {max_attempts: lots}\n")
    outcome = reload_run(setup.rt, setup.daemon)
    assert not outcome.applied and setup.rt.metrics.reloads == [False]
    assert flatten(setup.rt.config) == before
    assert "retry.max_attempts" in caplog.text and "config reloaded" not in caplog.text


def test_credentials_run_does_not_use_may_be_missing(setup, monkeypatch):
    """`run` loads the file without the push Token (serve's); so does its reload."""
    outcome = setup.edit(_set("apps", "default", "push", value={"token": "${NOT_SET_HERE}"}))
    assert outcome.applied, outcome


# ----------------------------------------------------------------- the in-use guard


@pytest.fixture
def guarded(tmp_path, any_db, sandbox):
    """A daemon's runtime on each engine, with a row waiting (for later) on
    vip_pay_success, and a second templates file without it."""
    from tests.conftest import ROOT, _url_of

    full = tmp_path / "templates.yaml"
    full.write_text((ROOT / "templates.yaml").read_text())
    without = tmp_path / "other.yaml"
    _drop(full, "vip_pay_success", without)
    data = config_data(folder=tmp_path, api_base=sandbox.url, templates=str(full))
    data["database"] = _url_of(any_db, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    rt = Runtime.build(load_config(path, strict_secrets=False), any_db)
    rt.metrics = Recorder()
    insert_sql(any_db, template="vip_pay_success", openid="oLater",
               params='["Gold", 199, "2026-11-28 10:30", "hi"]', send_at="2037-12-31 00:00:00")
    yield rt, path, full, without
    rt.close()


def _drop(source: Path, name: str, target: Path) -> None:
    data = yaml.safe_load(source.read_text())
    del data[name]
    target.write_text(yaml.safe_dump(data, allow_unicode=True))


def _point_at(path: Path, templates: Path) -> None:
    d = yaml.safe_load(path.read_text())
    d["templates"] = str(templates)
    path.write_text(yaml.safe_dump(d))


def test_templates_moved_elsewhere_cannot_strand_waiting_rows(guarded, caplog):
    rt, path, full, without = guarded
    for _ in range(3):  # after any number of reloads
        assert reload_run(rt, FakeDaemon()).applied  # nothing changed: applied
        _point_at(path, without)
        outcome = reload_run(rt, FakeDaemon())
        assert not outcome.applied and "vip_pay_success (1 rows)" in outcome.reason
        assert "vip_pay_success" in rt.templates.current.templates
        assert rt.templates.path == full and rt.config.templates == full
        _point_at(path, full)
    # the guard also holds for the file edited in place, SIGHUP or not
    full.write_text(without.read_text())
    assert not reload_run(rt, FakeDaemon()).applied
    assert rt.templates.reload() is False
    assert "vip_pay_success" in rt.templates.current.templates
    assert rt.metrics.reloads == [True, False, True, False, True, False, False]


def test_templates_moved_elsewhere_are_taken_when_nothing_waits_on_what_they_drop(guarded):
    rt, path, full, without = guarded
    with rt.db.connection_context():
        rt.db.execute_sql("UPDATE msg_list SET status = 'cancelled'")
    _point_at(path, without)
    assert reload_run(rt, FakeDaemon()).applied
    assert rt.templates.path == without and "vip_pay_success" not in rt.templates.current.templates
    # and the guard came along: the new file, edited to drop a template in use, is refused
    insert_sql(rt.db, template="order_status", openid="oWait", params=PARAMS,
               send_at="2037-12-31 00:00:00")  # (MySQL's TIMESTAMP ends in 2038)
    _drop(without, "order_status", without)
    assert rt.templates.reload() is False
    assert not reload_run(rt, FakeDaemon()).applied
    assert "order_status" in rt.templates.current.templates


# ----------------------------------------------------------------- serve


SERVE_MATRIX: list[tuple[str, Callable[[dict[str, Any]], None], bool]] = [
    ("log.level", _set("log", "level", value="WARNING"), True),
    ("dispatch.rate_limit", _set("dispatch", "rate_limit", value=5), True),
    ("sms.sign_name", _set("sms", "sign_name", value="新签名"), True),
    ("http.timeout", _set("http", "timeout", value="3s"), True),
    ("apps.default.secret", _set("apps", "default", "secret", value="another-secret-1"), True),
    ("web.listen", _set("web", "listen", value="127.0.0.1:18080"), False),
    ("console.listen", _set("console", "listen", value="127.0.0.1:19465"), False),
    ("console.users", _set("console", "users", value={"ops": {
        "password_hash": "scrypt$16384$8$1$c2FsdA$aGFzaA"}}), False),
    ("apps.default.push", _set("apps", "default", "push", value={"token": "pushTok1"}), False),
    ("sms.callback_token", _set("sms", "callback_token", value="c" * 20), False),
    ("grants.on_missing", _set("grants", "on_missing", value="hold"), False),
    ("receipts.missing_after", _set("receipts", "missing_after", value="1h"), False),
    ("jobs.events.every", _set("jobs", "events", "every", value="9s"), False),
    ("database", _set("database", value="sqlite:////tmp/elsewhere.db"), False),
]


@pytest.mark.parametrize(("key", "change", "applied"), SERVE_MATRIX,
                         ids=[m[0] for m in SERVE_MATRIX])
def test_serve_reload_matrix(tmp_path, db, sandbox, sms_sandbox, key, change, applied, caplog):
    from web import server

    templates = write_templates(tmp_path)
    data = config_data(folder=tmp_path, api_base=sandbox.url,
                       **overrides(templates, sms_sandbox.url))
    data["database"] = f"sqlite:///{db.database}"
    change_first = yaml.safe_load(yaml.safe_dump(data))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    ctx = server.build(load_config(path, strict_secrets=False), db)
    before = flatten(ctx.config)
    change(change_first)
    path.write_text(yaml.safe_dump(change_first, allow_unicode=True))
    metrics = Recorder()
    outcome = reload_serve(ctx, needs=server.serve_credentials, metrics=metrics)
    assert outcome.applied is applied, outcome
    assert metrics.reloads == [applied]
    if applied:
        assert flatten(ctx.config) == flatten(load_config(path, strict_secrets=False))
    else:
        assert flatten(ctx.config) == before and key in " ".join(outcome.restart)


# ----------------------------------------------------------------- the tables


def _declared_leaves() -> list[str]:
    return [d.path.replace("<name>", "x") for d in DECLARATIONS if isinstance(d, Key)]


@pytest.mark.parametrize("table", [RUN_KEYS, SERVE_KEYS], ids=["run", "serve"])
def test_every_declared_key_is_classified_on_purpose(table):
    """Restart is the default for a key nobody thought about; each key of today's
    schema is in the table by a pattern (so the matrix above is the whole story)."""
    from fnmatch import fnmatchcase

    missing = [k for k in _declared_leaves()
               if not any(fnmatchcase(k, p) for p, _ in table)]
    assert missing == []


def test_changed_keys_sees_sections_come_and_go(setup):
    cfg = setup.rt.config
    import dataclasses

    gone = dataclasses.replace(cfg, sms=None)
    keys = changed_keys(cfg, gone)
    assert "sms" in keys and "sms.sign_name" in keys
    assert changed_keys(cfg, cfg) == []
    assert clock.now()  # (the clock seam is untouched by a reload)


def test_a_key_no_table_names_needs_a_restart():
    """A key added to the schema later, without a decision here, refuses the reload
    rather than being taken and silently ignored."""
    from reload import classify

    assert classify("web.push_max_age", SERVE_KEYS) == "restart"
    assert classify("quota.something_new", RUN_KEYS) == "restart"
    assert classify("not_yet_a_key", RUN_KEYS) == "restart"
