"""Every secret redacted everywhere: the app secret, access tokens, the push Token and
AES key, the SMS SecretId, SecretKey and callback token, webhook secrets and console
password hashes never reach a row's error, its history, a log line, `status`, `show` or
the metrics page, also when a remote (WeChat, Tencent Cloud, a webhook receiver) echoes
one back in its answer. The redaction set holds the secrets in force: a replaced access
token leaves it (the current and the previous one per app are kept), and importing
Herald installs no logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

import clock
from config import load_config
from db.models import MsgEvent
from jobs import dispatch
from logs import SECRETS, TOKENS_KEPT, redact
from metrics import Metrics
from runtime import Runtime
from sandbox.sms import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, SmsSandbox
from tests.channel_support import PARAMS, SMS_TID, overrides, write_templates
from tests.conftest import APPID, ROOT, SECRET, insert_sql, row
from tests.support import clean_env, config_data

PUSH_TOKEN = "pushTokenSecret9X"
AES_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
CALLBACK = "cb-token-0123456789abcdef"
HASH = "scrypt$16384$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
HOOK = "hook-secret-0123456789abcdef"  # channel_support's template secret
CONFIG_SECRETS = [SECRET, PUSH_TOKEN, AES_KEY, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY,
                  CALLBACK, HASH, HOOK]


class Echo:
    """A webhook receiver that answers 400 quoting what it is told to."""

    def __init__(self, status: int = 400) -> None:
        self.body = b""
        self.status = status
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None: ...

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(echo.status)
                self.send_header("Content-Length", str(len(echo.body)))
                self.end_headers()
                self.wfile.write(echo.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}) as sb:
        yield sb


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


@pytest.fixture
def secret_world(tmp_path, any_db, sandbox, sms_sandbox, echo):
    """A daemon runtime whose config holds one of every kind of secret."""
    from tests.conftest import _url_of

    templates = write_templates(tmp_path, echo.url + "/hook")
    more = overrides(templates, sms_sandbox.url)
    more["sms"]["callback_token"] = CALLBACK
    more["apps"] = {"default": {"appid": APPID, "secret": SECRET,
                                "push": {"token": PUSH_TOKEN, "aes_key": AES_KEY}}}
    data = config_data(folder=tmp_path, api_base=sandbox.url,
                       console={"users": {"ops": {"password_hash": HASH}}}, **more)
    data["database"] = _url_of(any_db, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    rt = Runtime.build(load_config(path, strict_secrets=False), any_db)
    yield rt, path
    rt.close()


def leaks(text: str, secrets: list[str]) -> list[str]:
    """The secrets, or a 12-character start of one, found in `text`."""
    return [s for s in secrets if s in text or s[:12] in text]


def test_secrets_echoed_by_remotes_reach_no_column_log_verb_or_metric(
        secret_world, sandbox, sms_sandbox, echo, caplog, tmp_path):
    rt, path = secret_world
    db = rt.db
    token = rt.tokens.get("default", clock.now())
    everything = [*CONFIG_SECRETS, token]
    quoted = " ".join(everything)
    # WeChat refusing a send, quoting every secret (and the access token) in errmsg
    sandbox.inject({"errcode": 40003, "errmsg": f"invalid openid; you sent {quoted}"})
    wechat = insert_sql(db, template="order_status", openid="oW", params='["a", 1, "b", "c"]')
    # Tencent Cloud quoting the SecretId and key in a message
    sms_sandbox.inject("AuthFailure.SecretIdNotFound", message=f"SecretId {DEFAULT_SECRET_ID} "
                       f"key {DEFAULT_SECRET_KEY} unknown")
    sms = insert_sql(db, template="order_sms", openid="oS", phone="+8613800138000",
                     params=PARAMS)
    # a webhook receiver quoting the secret across the cut of the excerpt (80 chars)
    echo.body = ("x" * 70 + HOOK + " " + PUSH_TOKEN).encode()
    hook = insert_sql(db, template="order_hook", openid="oH", params=PARAMS)
    with caplog.at_level(logging.DEBUG):
        dispatch.run(rt)
    errors = {rid: row(rid).error or "" for rid in (wechat, sms, hook)}
    assert row(wechat).errcode == 40003 and "<redacted>" in errors[wechat]
    assert "<redacted>" in errors[sms] and "<redacted>" in errors[hook], errors
    for rid, text in errors.items():
        assert leaks(text, everything) == [], (rid, text)
    with db.connection_context():
        history = " ".join(str(e.detail) for e in MsgEvent.select())
    assert history and leaks(history, everything) == [], history
    assert leaks(caplog.text, everything) == []

    # the verbs, in processes of their own (they know no token: the columns must be clean)
    for verb in (["status"], ["show", str(wechat)], ["show", str(sms)], ["show", str(hook)]):
        out = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "--config",
                              str(path), *verb], cwd=ROOT, env=clean_env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert leaks(out.stdout + out.stderr, everything) == [], (verb, out.stdout)
    assert "<redacted>" in out.stdout or "webhook receiver answered" in out.stdout

    # the metrics page
    metrics = Metrics(db=db, token_expiry=lambda: {"default": rt.tokens.expires_at("default")})
    page = generate_latest(metrics.registry).decode()
    assert "herald_messages" in page or "herald_queue" in page
    assert leaks(page, everything) == []


def test_a_remote_echo_cut_mid_secret_leaves_no_half():
    """The excerpt of a non-JSON answer is cut at 60 characters: masked first, then cut."""
    from channels.wechat_api import WeChatClient

    secret = "half-secret-value-0123456789-abcdefghij"
    SECRETS.add(secret)
    page = ("<html>" + "y" * 44 + secret + "</html>").encode()

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = WeChatClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
    try:
        ans = client.send("tok", {"touser": "o"})
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert "non-JSON" in ans.reason or "JSON" in ans.reason, ans.reason
    assert "y" * 10 in ans.reason, ans.reason  # the excerpt is there, cut before the secret
    assert secret[:8] not in ans.reason, ans.reason


def test_a_replaced_access_token_leaves_the_redaction_set(db, sandbox, runtime_factory):
    rt = runtime_factory(db, sandbox)
    seen: list[str] = []
    now = clock.now()
    for _ in range(6):
        sandbox.expire_tokens()
        token = rt.tokens.get("default", now)
        rt.tokens.expire("default", token, now)  # as a 42001 would
        seen.append(token)
    held = SECRETS.group("token:default")
    assert held == (seen[-1], seen[-2]) and len(held) == TOKENS_KEPT
    assert redact(f"t={seen[-1]} p={seen[-2]}") == "t=<redacted> p=<redacted>"
    assert seen[0] not in SECRETS.values()  # gone: the set does not grow with refreshes


def test_a_reload_replaces_the_config_secrets(secret_world, tmp_path):
    from reload import reload_run

    rt, path = secret_world
    data = yaml.safe_load(path.read_text())
    data["sms"]["secret_key"] = "a-brand-new-sms-secret-key-000001"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert reload_run(rt, None).applied
    assert "a-brand-new-sms-secret-key-000001" in SECRETS.group("config")
    assert DEFAULT_SECRET_KEY not in SECRETS.group("config")
    assert SECRET in SECRETS.group("config") and HASH in SECRETS.group("config")


def test_importing_herald_installs_no_logging():
    """Every module of Herald, imported in a fresh interpreter: no record factory, no
    handler, no logger level changed; only the call installs them."""
    from tests.test_imports import modules

    names = sorted(n for n in modules() if not n.startswith(("tests", "bench", "examples"))
                   and not n.endswith("__main__"))
    assert {"scheduler", "logs", "commands.run", "commands.serve", "commands.demo",
            "service.shell", "service.wiring", "web.server", "runtime"} <= set(names)
    code = (
        "import importlib, logging, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "factory = logging.getLogRecordFactory()\n"
        "levels = {n: logging.getLogger(n).level for n in ('', 'urllib3', 'peewee')}\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "assert logging.getLogRecordFactory() is factory, 'record factory installed'\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert {n: logging.getLogger(n).level for n in levels} == levels\n"
        "import logs\n"
        "logs.install_redaction()\n"
        "assert logging.getLogRecordFactory() is not factory\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.fixture
def loose_kept() -> Iterator[None]:
    """The test fills the loose set: what other tests added before is put back after."""
    saved = SECRETS.loose()
    yield
    for value in saved:
        SECRETS.add(value)


def test_values_met_on_the_way_are_a_bounded_set(loose_kept):
    """add_secret() (a candidate templates file's secret, a one-shot verb's token): the
    newest LOOSE_MAX stay masked, older ones leave, so the set never grows without end."""
    from logs import LOOSE_MAX, add_secret

    values = [f"loose-value-{i:04d}-x" for i in range(LOOSE_MAX + 1)]
    for v in values:
        add_secret(v)
    assert values[0] not in SECRETS.values()
    assert redact(values[0]) == values[0]
    assert redact(f"{values[1]} {values[-1]}") == "<redacted> <redacted>"
    add_secret(values[1])  # met again: newest now, so values[2] is the next to go
    add_secret("loose-value-one-more")
    assert values[1] in SECRETS.values() and values[2] not in SECRETS.values()


def test_the_verbs_mask_what_a_column_holds(tmp_path, db, sandbox, runtime_factory):
    """A row an older release (or another program) stored with a secret in it: the
    verbs still print it masked, knowing the config's secrets."""
    data = config_data(folder=tmp_path, api_base=sandbox.url)
    data["database"] = f"sqlite:///{db.database}"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    rid = insert_sql(db, template="order_status", openid="oOld", params=PARAMS,
                     status="fail", error=f"old text quoting {SECRET}")
    for verb in (["status"], ["show", str(rid)]):
        out = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "--config",
                              str(path), *verb], cwd=ROOT, env=clean_env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout and "<redacted>" in out.stdout, out.stdout


def test_the_sms_client_masks_its_own_secret_id():
    """Even where no config registered it (a client made alone), Tencent echoing the
    SecretId does not put it in a reason."""
    from channels.tencent_sms import SmsClient

    secret_id, key = "AKIDonlythisclientknows01", "key-only-this-client-knows-0001"
    with SmsSandbox(secret_id=secret_id, secret_key=key, templates={SMS_TID: 2}) as sb:
        sb.inject("AuthFailure.SecretIdNotFound", message=f"SecretId {secret_id} unknown")
        client = SmsClient(sb.url, secret_id, key, "ap-guangzhou", sb.sdk_app_id, 5)
        try:
            ans = client.send("+8613800138000", SMS_TID, ["a", "b"], "Herald")
        finally:
            client.close()
    assert "AuthFailure" in ans.reason and secret_id not in ans.reason, ans.reason
    assert secret_id not in SECRETS.values()  # nobody else masked it for the client


def test_an_sms_answer_cut_mid_secret_leaves_no_half():
    """A non-JSON answer (a proxy's page) quoting the SecretKey across the 60-character
    cut of its excerpt."""
    from channels.tencent_sms import SmsClient

    key = "sms-key-cut-in-the-middle-0123456789"
    echo = Echo(status=200)
    echo.body = ("<html>" + "z" * 44 + key + "</html>").encode()
    client = SmsClient(echo.url, "AKIDcutcutcut0001", key, "ap-guangzhou", "1400006666", 5)
    try:
        ans = client.send("+8613800138000", SMS_TID, ["a", "b"], "Herald")
    finally:
        client.close()
        echo.close()
    assert "JSON" in ans.reason and key[:8] not in ans.reason, ans.reason
