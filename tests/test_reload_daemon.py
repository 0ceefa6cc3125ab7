"""SIGHUP to real `run` and `serve` processes: a reload applies every change it accepts
(the SMS sign name and keys, a webhook secret: the next sends use them), or refuses the
whole file, naming the setting that needs a restart, and the metric says which. The
in-use template guard holds whether the file changed in place or `templates:` points
elsewhere, after any number of reloads."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from db.connection import init_schema
from sandbox.sms import DEFAULT_SECRET_KEY, DEFAULT_SIGN_NAME, SmsSandbox
from sandbox.webhook import WebhookSandbox
from tests.bound import connect
from tests.channel_support import (
    HOOK_SECRET,
    PARAMS,
    SMS_TID,
    overrides,
    with_official_account,
    write_templates,
)
from tests.conftest import ROOT, SECRET, insert_sql
from tests.support import DaemonProcess, ServeProcess, config_data, wait_for

pytestmark = pytest.mark.slow

NEW_KEY = "sms-secret-key-after-the-reload-0001"
NEW_HOOK = "hook-secret-after-the-reload-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(db, rid: int) -> str:
    with db.connection_context():
        return db.execute_sql("SELECT status FROM msg_list WHERE id = ?", (rid,)).fetchone()[0]


def reloads(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {s.labels["result"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "herald_config_reloads_total"}


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}) as sb:
        yield sb


@pytest.fixture
def hook() -> Iterator[WebhookSandbox]:
    with WebhookSandbox(HOOK_SECRET) as sb:
        yield sb


def test_sighup_to_run_is_whole_or_refused(tmp_path: Path, sandbox, sms_sandbox, hook):
    with_official_account(sandbox)
    templates = write_templates(tmp_path, hook.url + "/hook")
    port = free_port()
    data: dict[str, Any] = config_data(folder=tmp_path, api_base=sandbox.url,
                                       jobs={"dispatch": {"every": "1s"}},
                                       metrics={"listen": f"127.0.0.1:{port}"},
                                       **overrides(templates, sms_sandbox.url))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    # a row for later names order_hook: no reload may take that template away
    with db.connection_context():
        insert_sql(db, template="order_hook", openid="oLater", params=PARAMS,
                   send_at="2099-01-01 00:00:00")
    d = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    n = 0

    def send(template: str, **cols: Any) -> int:
        nonlocal n
        n += 1
        with db.connection_context():
            rid = insert_sql(db, template=template, openid=f"o{n}", params=PARAMS, **cols)
        assert wait_for(lambda: status(db, rid) in ("success", "fail"), timeout=30), d.tail()
        return rid

    def sighup(said: str) -> str:
        before = d.text().count(said)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: d.text().count(said) > before, timeout=30), d.tail()
        text = d.text()
        return text[text.rindex(said) - 200:][:1200]

    def write(change: dict[str, Any]) -> None:
        for k, v in change.items():
            if isinstance(v, dict):
                data[k] = {**data.get(k, {}), **v}
            else:
                data[k] = v
        cfg.write_text(yaml.safe_dump(data, allow_unicode=True))

    phone = {"phone": "+8613800138000"}
    try:
        d.wait_ready()
        assert status(db, send("order_sms", **phone)) == "success"
        assert sms_sandbox.accepted[-1]["sign_name"] == DEFAULT_SIGN_NAME
        assert reloads(port) == {"applied": 0, "refused": 0}

        # 1. new SMS sign name and SecretKey, a new webhook secret: all in force
        sms_sandbox.secret_key = NEW_KEY  # rotated at Tencent Cloud too
        hook.secret = NEW_HOOK
        templates.write_text(templates.read_text().replace(HOOK_SECRET, NEW_HOOK))
        # (and a dispatch pool of another size, a new timeout: new pool, new senders)
        write({"sms": {"sign_name": "新签名", "secret_key": NEW_KEY},
               "dispatch": {"workers": 3}, "http": {"timeout": "3s"}})
        said = sighup("config reloaded")
        assert "sms.secret_key" in said and "sms.sign_name" in said
        assert "dispatch.workers" in said and "http.timeout" in said
        assert status(db, send("order_sms", **phone)) == "success", d.tail()
        assert sms_sandbox.accepted[-1]["sign_name"] == "新签名"
        assert status(db, send("order_hook")) == "success", d.tail()
        assert hook.deliveries and not hook.rejected
        assert reloads(port) == {"applied": 1, "refused": 0}

        # 2. a setting that needs a restart: the whole file waits for it
        write({"database": f"sqlite:///{tmp_path / 'other.db'}", "sms": {"sign_name": "第三"}})
        said = sighup("config not reloaded")
        assert "database changed and need a restart" in said
        assert status(db, send("order_sms", **phone)) == "success"
        assert sms_sandbox.accepted[-1]["sign_name"] == "新签名"  # not 第三: none of it
        assert reloads(port) == {"applied": 1, "refused": 1}
        write({"database": data["database"].replace("other.db", "herald.db"),
               "sms": {"sign_name": "新签名"}})
        data["database"] = f"sqlite:///{tmp_path / 'herald.db'}"
        cfg.write_text(yaml.safe_dump(data, allow_unicode=True))

        # 3. templates: pointing at a file without order_hook, which a row waits on
        other = tmp_path / "other.yaml"
        tpl = yaml.safe_load(templates.read_text())
        del tpl["order_hook"]
        other.write_text(yaml.safe_dump(tpl, allow_unicode=True))
        for _ in range(2):  # and again: the guard does not wear off
            write({"templates": str(other)})
            said = sighup("config not reloaded")
            assert "order_hook (1 rows)" in said, said
            assert status(db, send("order_hook")) == "success", d.tail()
            write({"templates": str(templates)})
            sighup("config reloaded")

        # 4. the same file edited in place: refused by SIGHUP and by the file watch
        kept = templates.read_text()
        templates.write_text(other.read_text())
        said = sighup("config not reloaded")
        assert "order_hook (1 rows)" in said
        assert "order_hook (1 rows)" in d.text()[d.text().rindex("templates not reloaded"):] \
            if "templates not reloaded" in d.text() else True
        assert status(db, send("order_hook")) == "success", d.tail()
        templates.write_text(kept)
        assert reloads(port) == {"applied": 3, "refused": 4}
        assert d.stop(signal.SIGTERM) == 0, d.tail()
    finally:
        d.close()
    text = d.text()
    assert "Traceback" not in text
    for secret in (SECRET, NEW_KEY, DEFAULT_SECRET_KEY, NEW_HOOK, HOOK_SECRET):
        assert secret not in text


def test_sighup_to_serve_is_whole_or_refused(tmp_path: Path, sandbox):
    full = tmp_path / "templates.yaml"
    full.write_text((ROOT / "templates.yaml").read_text())
    tpl = yaml.safe_load(full.read_text())
    del tpl["vip_pay_success"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tpl, allow_unicode=True))
    more = yaml.safe_load(full.read_text())
    more["walk_in"] = {"template_id": "WALKIN0001", "data": {"thing1": "walk-ins"}}
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(more, allow_unicode=True))
    data = config_data(folder=tmp_path, api_base=sandbox.url, templates=str(full),
                       web={"listen": f"127.0.0.1:{free_port()}"}, console={"listen": None})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    with db.connection_context():
        insert_sql(db, template="vip_pay_success", openid="oLater",
                   params='["Gold", 199, "2026-11-28 10:30", "hi"]', send_at="2099-01-01 00:00:00")
    s = ServeProcess(cfg, tmp_path / "serve.log", "serve").start()

    def sighup(said: str) -> str:
        before = s.text().count(said)
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: s.text().count(said) > before, timeout=30), s.tail()
        text = s.text()
        return text[text.rindex(said):][:600]

    def point(path: Path, **more: Any) -> None:
        cfg.write_text(yaml.safe_dump({**data, "templates": str(path), **more}))

    try:
        s.wait_ready()
        for _ in range(2):
            point(other)
            assert "vip_pay_success (1 rows)" in sighup("config not reloaded")
            point(bigger)
            assert "templates: " in sighup("config reloaded")
        full.write_text(other.read_text())  # and in place, after those reloads
        point(full)
        assert "vip_pay_success (1 rows)" in sighup("config not reloaded")
        full.write_text(bigger.read_text())
        point(full, console={"listen": f"127.0.0.1:{free_port()}"})
        said = sighup("config not reloaded")
        assert "console.listen" in said and "need a restart" in said
        point(full, log={"level": "WARNING"})
        sighup("config reloaded")
        assert s.stop(signal.SIGTERM) == 0, s.tail()
    finally:
        s.close()
    assert "Traceback" not in s.text()
