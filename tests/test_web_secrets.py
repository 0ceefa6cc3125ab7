"""Secrets on the web side: the SMS callback token is in the URL path, so neither
Herald's lines nor the WSGI server's own (its "Exception while serving <path>" and
"Client disconnected while serving <path>") may print it; nor the push Token or AES
key that an exception's text might carry."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import requests
from waitress.server import create_server

from tests.conftest import _url_of, make_config
from tests.support import APPID, SECRET, wait_for
from web import push, server
from web.push import make_app
from web.wsgi import MaskPaths, mask_server_logs

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
TOKEN = "pushTokenSecret7"
SMS_TOKEN = "cbSecretToken-0123456789abcdef"


def all_text(caplog: Any) -> str:
    """Every captured line as a handler would print it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records)


def test_an_error_on_the_callback_url_never_prints_the_token(db, sandbox, tmp_path: Path,
                                                              caplog, monkeypatch) -> None:
    cfg = make_config(_url_of(db, tmp_path), sandbox.url, tmp_path, apps={
        "default": {"appid": APPID, "secret": SECRET, "push": {"token": TOKEN, "aes_key": KEY}}},
        sms={"secret_id": "AKIDtest", "secret_key": "k" * 32, "sdk_app_id": "1400000001",
             "sign_name": "Herald", "callback_token": SMS_TOKEN}, console={"listen": None})
    ctx = server.build(cfg, db)
    waitress_log = logging.getLogger("waitress")
    for f in [f for f in waitress_log.filters if isinstance(f, MaskPaths)]:
        waitress_log.removeFilter(f)  # whatever an earlier test installed: the Listener must

    def broken(*_a: Any, **_k: Any) -> int:  # the database fails, its message echoing all
        raise RuntimeError(f"cannot store /tencent/sms/status/{SMS_TOKEN} with {TOKEN} {KEY}")

    monkeypatch.setattr(push, "store", broken)
    listener = server.Listener(make_app(ctx), "127.0.0.1", 0, name="push").start()
    try:
        with caplog.at_level(logging.DEBUG):
            r = requests.post(f"{listener.url}/tencent/sms/status/{SMS_TOKEN}",
                              json=[{"sid": "1", "report_status": "SUCCESS"}], timeout=5)
            # a client that goes away before its answer: waitress's INFO line
            with socket.create_connection((listener.host, listener.port)) as s:
                s.sendall(f"POST /tencent/sms/status/{SMS_TOKEN} HTTP/1.1\r\nHost: x\r\n"
                          "Content-Length: 5\r\n\r\n[{}]".encode())
            # the line waitress writes when an exception does reach it (see below)
            try:
                raise OSError("x")
            except OSError:
                waitress_log.exception(f"Exception while serving /tencent/sms/status/"
                                       f"{SMS_TOKEN}")
    finally:
        listener.stop()
    assert r.status_code == 500 and SMS_TOKEN not in r.text
    text = all_text(caplog)
    assert "internal error serving POST /tencent/sms/status/<token>: RuntimeError" in text
    assert "Exception while serving /tencent/sms/status/<token>" in text
    for secret in (SMS_TOKEN, TOKEN, KEY):
        assert secret not in text, secret


def test_waitress_own_error_line_is_masked(caplog) -> None:
    """waitress's own path: an application error reaching the server (as it would
    without Herald's guard) logs 'Exception while serving <path>' with a traceback. The
    token here was never registered as a secret: the path mask alone hides it."""
    token = "cbNeverRegistered-0123456789abcdef"

    def raising(environ: dict[str, Any], start_response: Any) -> Any:
        raise ValueError(f"bad {environ['PATH_INFO']}")

    mask_server_logs()
    srv = create_server(raising, host="127.0.0.1", port=0, threads=1,
                        expose_tracebacks=False)
    import threading

    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO):
            r = requests.get(f"http://127.0.0.1:{srv.effective_port}/tencent/sms/status/"
                             f"{token}", timeout=5)
            assert wait_for(lambda: any("Exception while serving" in x.getMessage()
                                        for x in caplog.records), 5)
    finally:
        srv.task_dispatcher.shutdown()
        srv.close()
        thread.join(5)
    assert r.status_code == 500
    text = all_text(caplog)
    assert "Exception while serving /tencent/sms/status/<token>" in text
    assert "bad /tencent/sms/status/<token>" in text  # the traceback's message too
    assert token not in text
