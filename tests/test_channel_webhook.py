"""The webhook channel against sandbox/webhook.py and one-off servers: the body and its
signature (checked here with an HMAC computed in the test), every answer class with its
Kind, hostile answers, and where the secret comes from."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.base import Kind
from channels.webhook import Webhook
from jobs import dispatch
from sandbox.webhook import WebhookSandbox
from templates import TemplateError, render_row
from tests.channel_support import HOOK_SECRET, PARAMS, load, overrides, write_templates
from tests.conftest import insert_sql, row
from tests.sms_support import fixed_server


@pytest.fixture
def db(any_db):
    """Rows go through every dialect (servers skip unless configured)."""
    return any_db


@pytest.fixture
def hook() -> Iterator[WebhookSandbox]:
    with WebhookSandbox(HOOK_SECRET) as sb:
        yield sb


def built(path: Path, row_id: int = 5, openid: str | None = "oU", phone: str | None = None):
    return render_row(load(path), template="order_hook", openid=openid, phone=phone,
                      params=PARAMS, row_id=row_id).built


def my_hmac(secret: str, timestamp: str, body: bytes) -> str:
    """The signature as a receiver computes it, written here on its own."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def test_a_row_is_posted_signed_and_its_answer_id_kept(db, sandbox, hook, runtime_factory,
                                                      tmp_path):
    path = write_templates(tmp_path, hook.url + "/herald-hook")
    rt = runtime_factory(db, sandbox, **overrides(path))
    rid = insert_sql(db, template="order_hook", openid="oU", phone="+8613800138000",
                     params=PARAMS)
    before = int(time.time())
    assert dispatch.run(rt).sent == 1
    [got] = hook.deliveries
    assert got.path == "/herald-hook"
    assert json.loads(got.body) == {
        "id": rid, "template": "order_hook", "app": "default", "openid": "oU",
        "phone": "+8613800138000", "data": {"title": "订单shipped", "goods": "Flat white"},
    }
    assert got.body.decode("utf-8").startswith('{"id":')  # compact UTF-8, not \\u escapes
    assert "订单" in got.body.decode("utf-8")
    assert before - 1 <= int(got.timestamp) <= int(time.time()) + 1
    assert hmac.compare_digest(got.signature, my_hmac(HOOK_SECRET, got.timestamp, got.body))
    r = row(rid)
    assert (r.status, r.msgid, r.errcode) == ("success", "wh-1", None)


def test_sends_to_one_recipient_are_serialised_by_openid_or_phone(tmp_path):
    path = write_templates(tmp_path)
    assert built(path).recipient == "webhook:oU"
    assert built(path, openid=None, phone="+8613800138000").recipient == \
        "webhook:+8613800138000"
    assert built(path, openid=None, row_id=77).recipient == "webhook:77"


def test_the_sandbox_refuses_a_wrong_or_stale_signature(hook, tmp_path):
    path = write_templates(tmp_path, hook.url + "/h")
    wrong = Webhook(2, 4)
    stale = Webhook(2, 4, clock=lambda: time.time() - 3600)
    try:
        b = built(path)
        bad_secret = type(b)(body=b.body, recipient=b.recipient,
                             extra={**b.extra, "secret": "another-secret-0123456789"})
        refused = wrong.send(bad_secret, None)
        old = stale.send(b, None)
    finally:
        wrong.close()
        stale.close()
    assert (refused.kind, refused.errcode) == (Kind.PERMANENT, 401)
    assert (old.kind, old.errcode) == (Kind.PERMANENT, 401)
    assert [why for why, _ in hook.rejected] == ["bad X-Herald-Signature",
                                                 "stale X-Herald-Timestamp"]
    assert hook.deliveries == []


# -- every answer class, with the Kind each must give (written here, not read) -----------

STATUSES = [
    (200, Kind.SUCCESS), (201, Kind.SUCCESS), (202, Kind.SUCCESS), (204, Kind.SUCCESS),
    (400, Kind.PERMANENT), (401, Kind.PERMANENT), (403, Kind.PERMANENT),
    (404, Kind.PERMANENT), (410, Kind.PERMANENT), (422, Kind.PERMANENT),
    (408, Kind.TRANSIENT), (429, Kind.TRANSIENT),
    (500, Kind.TRANSIENT), (502, Kind.TRANSIENT), (503, Kind.TRANSIENT), (504, Kind.TRANSIENT),
]


@pytest.mark.parametrize(("status", "kind"), STATUSES, ids=[str(s) for s, _ in STATUSES])
def test_every_status_gives_its_kind(hook, tmp_path, status, kind):
    path = write_templates(tmp_path, hook.url + "/h")
    hook.answer(5, status)
    w = Webhook(2, 4)
    try:
        answer = w.send(built(path, row_id=5), None)
    finally:
        w.close()
    assert answer.kind is kind, answer.reason
    if kind is not Kind.SUCCESS:
        assert answer.errcode == status and f"HTTP {status}" in answer.reason


def test_a_redirect_is_not_followed(tmp_path):
    with fixed_server(lambda h, b: (302, "text/plain", b"moved")) as url:
        path = write_templates(tmp_path, url + "/h")
        w = Webhook(2, 4)
        try:
            answer = w.send(built(path), None)
        finally:
            w.close()
    assert (answer.kind, answer.errcode) == (Kind.PERMANENT, 302)
    assert "redirects are not followed" in answer.reason


def test_slow_refused_and_broken_receivers_are_transient(hook, tmp_path):
    path = write_templates(tmp_path, hook.url + "/h")
    hook.slow(5, 3)
    w = Webhook(0.5, 4)
    try:
        slow = w.send(built(path, row_id=5), None)
    finally:
        w.close()
    assert (slow.kind, slow.timed_out) == (Kind.TRANSIENT, True)
    assert "may have delivered" in slow.reason
    path = write_templates(tmp_path, "http://127.0.0.1:9/h")  # nobody listens there
    w = Webhook(2, 4)
    try:
        refused = w.send(built(path), None)
    finally:
        w.close()
    assert refused.kind is Kind.TRANSIENT and "connection refused" in refused.reason


HOSTILE_2XX = [
    (b'{"id": "abc-1"}', "abc-1", ""),
    (b'{"id": 12345678901234567890}', "12345678901234567890", ""),
    (b'ok', None, ""),
    (b'', None, ""),
    (b'[1, 2]', None, ""),
    (b'{"id": [1, 2]}', None, "its id is a list"),
    (b'{"id": 1.5}', None, "its id is a float"),
    (b'{"id": true}', None, "its id is a bool"),
    (b'{"id": "' + b'x' * 200 + b'"}', None, "not storable"),
    (b'{"id": "a\\u0000b"}', None, "not storable"),
    (b'{"id": "x", "pad": "' + b' ' * 200_000 + b'"}', None, "over 64 KiB"),
    (b'[' * 100_000, None, ""),
]


@pytest.mark.parametrize(("reply", "msgid", "note"), HOSTILE_2XX,
                         ids=[f"2xx-{i}" for i in range(len(HOSTILE_2XX))])
def test_odd_2xx_answers_deliver_and_keep_only_a_sound_id(tmp_path, reply, msgid, note):
    with fixed_server(lambda h, b: (200, "application/json", reply)) as url:
        path = write_templates(tmp_path, url + "/h")
        w = Webhook(2, 4)
        try:
            answer = w.send(built(path), None)
        finally:
            w.close()
    assert (answer.kind, answer.msgid) == (Kind.SUCCESS, msgid)
    assert note in answer.reason


def test_an_echoed_secret_or_signature_never_reaches_a_reason(tmp_path):
    def echo(handler, body):
        sig = handler.headers["X-Herald-Signature"]
        return 400, "text/plain", f"bad {sig} {HOOK_SECRET}".encode()

    with fixed_server(echo) as url:
        path = write_templates(tmp_path, url + "/h")
        w = Webhook(2, 4)
        try:
            answer = w.send(built(path), None)
        finally:
            w.close()
    assert answer.kind is Kind.PERMANENT
    assert HOOK_SECRET not in answer.reason and "sha256=" not in answer.reason
    assert "<redacted>" in answer.reason


def test_a_huge_error_page_is_not_read_to_the_end(tmp_path):
    with fixed_server(lambda h, b: (503, "text/html", b"<p>" * 3_000_000)) as url:
        path = write_templates(tmp_path, url + "/h")
        w = Webhook(2, 4)
        try:
            answer = w.send(built(path), None)
        finally:
            w.close()
    assert answer.kind is Kind.TRANSIENT and "over 64 KiB" in answer.reason
    assert len(answer.reason) < 400


# -- where the secret comes from ---------------------------------------------------------

def hook_yaml(folder: Path, secret_line: str) -> Path:
    path = folder / "hook.yaml"
    path.write_text(f"""
inapp:
  channel: webhook
  url: https://app.example/hook
  {secret_line}
  data: {{title: hi}}
""", encoding="utf-8")
    return path


def test_secret_from_the_environment(tmp_path):
    from templates import LoadContext, load_templates

    path = hook_yaml(tmp_path, "secret: ${HOOK_SECRET_VAR}")
    tset = load_templates(path, context=LoadContext(base_dir=tmp_path,
                                                    env={"HOOK_SECRET_VAR": HOOK_SECRET}))
    secret = tset.templates["inapp"].settings["secret"]
    assert secret.reveal() == HOOK_SECRET and str(secret) == "<secret>"
    assert HOOK_SECRET not in repr(tset.templates["inapp"])


def test_secret_file_prefers_the_credentials_directory(tmp_path):
    from templates import LoadContext, load_templates

    creds = tmp_path / "creds"
    creds.mkdir()
    (tmp_path / "hook_secret").write_text("folder-secret-0123456789\n")
    (creds / "hook_secret").write_text("systemd-secret-0123456789\n")
    path = hook_yaml(tmp_path, "secret_file: hook_secret")
    here = load_templates(path, context=LoadContext(base_dir=tmp_path, env={}))
    assert here.templates["inapp"].settings["secret"].reveal() == "folder-secret-0123456789"
    there = load_templates(path, context=LoadContext(
        base_dir=tmp_path, env={"CREDENTIALS_DIRECTORY": str(creds)}))
    assert there.templates["inapp"].settings["secret"].reveal() == "systemd-secret-0123456789"


def test_a_secret_is_masked_in_every_log_line_once_loaded(tmp_path, caplog):
    import logging

    from templates import LoadContext, load_templates

    path = hook_yaml(tmp_path, "secret: a-literal-secret-0123456789")
    load_templates(path, context=LoadContext(base_dir=tmp_path, env={}))
    with caplog.at_level(logging.INFO):
        logging.getLogger("herald.test").info("leaked a-literal-secret-0123456789?")
    assert "a-literal-secret" not in caplog.text


def test_a_missing_variable_is_reported_without_any_secret(tmp_path):
    from templates import LoadContext, load_templates

    path = hook_yaml(tmp_path, "secret: ${NOT_SET_ANYWHERE}")
    with pytest.raises(TemplateError) as err:
        load_templates(path, context=LoadContext(base_dir=tmp_path, env={}))
    assert "environment variable NOT_SET_ANYWHERE is not set" in str(err.value)


# -- the manual's receiver example works against the real sender ---------------------------

MANUAL = Path(__file__).resolve().parent.parent / "docs" / "templates-and-channels.md"


def readme_receiver() -> str:
    text = MANUAL.read_text(encoding="utf-8")
    after = text.split("<!-- webhook-receiver-example -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_receiver_accepts_herald_and_refuses_forgeries(tmp_path, monkeypatch):
    import threading
    from http.server import HTTPServer

    import requests

    monkeypatch.setenv("HERALD_WEBHOOK_SECRET", HOOK_SECRET)
    scope: dict = {"__name__": "readme_example"}
    exec(compile(readme_receiver(), str(MANUAL), "exec"), scope)  # noqa: S102
    server = HTTPServer(("127.0.0.1", 0), scope["Hook"])
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    w = Webhook(2, 4)
    try:
        path = write_templates(tmp_path, url + "/h")
        ok = w.send(built(path, row_id=8), None)
        forged = requests.post(url, data=b'{"id": 1}', timeout=5, headers={
            "X-Herald-Timestamp": str(int(time.time())),
            "X-Herald-Signature": "sha256=" + "0" * 64})
        stamp = str(int(time.time()) - 3600)
        stale = requests.post(url, data=b'{"id": 1}', timeout=5, headers={
            "X-Herald-Timestamp": stamp,
            "X-Herald-Signature": my_hmac(HOOK_SECRET, stamp, b'{"id": 1}')})
    finally:
        w.close()
        server.shutdown()
        server.server_close()
    assert (ok.kind, ok.msgid) == (Kind.SUCCESS, "inapp-8")
    assert forged.status_code == 401 and stale.status_code == 401


def test_a_process_that_defers_credentials_defers_the_webhook_secret(tmp_path):
    """`serve` loads the config with strict_secrets=False and holds no send secrets: a
    webhook secret it cannot read is no error there, and nothing can be sent with it."""
    from config import config_from_dict
    from templates import LoadContext, load_templates
    from tests.support import config_data

    path = hook_yaml(tmp_path, "secret: ${HOOK_SECRET_ONLY_FOR_RUN}")
    data = config_data(folder=tmp_path, secret="${WECHAT_SECRET}", templates=str(path))
    web = config_from_dict(data, base_dir=tmp_path, env={}, strict_secrets=False)
    assert web.unresolved  # the AppSecret is not there either
    tset = load_templates(path, context=LoadContext(config=web, base_dir=tmp_path, env={}))
    b = render_row(tset, template="inapp", openid="oU", params="[]", row_id=1).built
    w = Webhook(2, 4)
    try:
        answer = w.send(b, None)
    finally:
        w.close()
    assert answer.kind is Kind.CREDENTIAL and "not available in this process" in answer.reason
    run = config_from_dict(data, base_dir=tmp_path, env={"WECHAT_SECRET": "s"})
    with pytest.raises(TemplateError, match="HOOK_SECRET_ONLY_FOR_RUN is not set"):
        load_templates(path, context=LoadContext(config=run, base_dir=tmp_path, env={}))
