"""sandbox/serving.py, the HTTP plumbing the three sandboxes share, tried on each of them
over real HTTP on 127.0.0.1: bodies read with a bad length refused, the control API's
answers, a stop that cuts kept-alive connections; and the by-hand ports, which must not
take one Herald listens on."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from config import config_from_dict
from sandbox import sms, webhook, wechat
from sandbox.serving import Emulator
from sandbox.sms import SmsSandbox
from sandbox.webhook import WebhookSandbox
from sandbox.wechat import Sandbox
from tests.support import ROOT

MAKERS: dict[str, Callable[[], Emulator]] = {
    "wechat": Sandbox,
    "sms": SmsSandbox,
    "webhook": lambda: WebhookSandbox("hook-secret"),
}


@pytest.fixture(params=sorted(MAKERS))
def any_sandbox(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    with MAKERS[request.param]() as sb:
        yield sb


def _raw(sb: Emulator, request: bytes) -> bytes:
    """Send bytes as they are; everything the sandbox answers until it closes."""
    with socket.create_connection((sb.host, sb.port), timeout=5) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _request(sb: Emulator, method: str, path: str, body: bytes | None = None
             ) -> tuple[int, Any]:
    conn = HTTPConnection(sb.host, sb.port, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("length", [b"-1", b"ten", b"-0x10"])
def test_a_bad_content_length_is_a_400_and_a_closed_connection(any_sandbox: Emulator,
                                                               length: bytes) -> None:
    # a negative length read as-is would wait for EOF: a kept-alive connection would hang
    answer = _raw(any_sandbox, b"POST /_sandbox/reset HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: " + length + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in head
    assert body == b'{"error":"bad Content-Length"}'


def test_the_webhook_receiver_refuses_a_body_over_its_limit_unread() -> None:
    with WebhookSandbox("hook-secret") as sb:
        over = webhook.BODY_MAX + 1
        answer = _raw(sb, b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + str(over).encode() + b"\r\n\r\n")  # no body follows
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert sb.stats()["requests"] == 0 and sb.rejected == []


def test_the_control_api_answers_alike_on_every_sandbox(any_sandbox: Emulator) -> None:
    assert _request(any_sandbox, "GET", "/_sandbox/nothing") == (
        404, {"error": "no such control GET nothing"})
    assert _request(any_sandbox, "POST", "/_sandbox/nothing", b"{}") == (
        404, {"error": "no such control POST nothing"})
    assert _request(any_sandbox, "POST", "/_sandbox/reset", b"[1]") == (
        400, {"error": "body must be a JSON object"})
    assert _request(any_sandbox, "POST", "/_sandbox/reset", b"{") == (
        400, {"error": "body must be a JSON object"})
    assert _request(any_sandbox, "POST", "/_sandbox/config", b'{"latency": "slow"}') == (
        400, {"error": "ValueError: could not convert string to float: 'slow'"})
    assert any_sandbox.latency == 0.0  # type: ignore[attr-defined]
    assert _request(any_sandbox, "POST", "/_sandbox/config", b'{"latency": 0.001}') == (
        200, {"ok": True})
    assert any_sandbox.latency == 0.001  # type: ignore[attr-defined]
    status, stats = _request(any_sandbox, "GET", "/_sandbox/stats")
    assert status == 200 and isinstance(stats, dict)


@pytest.mark.parametrize("name, path, body", [
    ("wechat", "/_sandbox/inject", b'{"times": 1}'),
    ("sms", "/_sandbox/blacklist", b"{}"),
    ("webhook", "/_sandbox/answer", b'{"id": 1}'),
])
def test_a_missing_control_argument_is_a_400_naming_it(name: str, path: str,
                                                       body: bytes) -> None:
    with MAKERS[name]() as sb:
        status, answer = _request(sb, "POST", path, body)
    assert status == 400 and answer["error"].startswith("KeyError: ")


def test_http_servers_own_errors_name_the_sandbox(any_sandbox: Emulator) -> None:
    answer = _raw(any_sandbox, b"PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 ")
    server = re.search(rb"\r\nServer: ([^\r]+)", answer)
    assert server is not None
    assert server.group(1).split()[0].decode() == type(any_sandbox).server_version


def test_stop_cuts_a_kept_alive_connection(any_sandbox: Emulator) -> None:
    conn = HTTPConnection(any_sandbox.host, any_sandbox.port, timeout=5)
    conn.request("GET", "/_sandbox/stats")
    assert conn.getresponse().read()
    any_sandbox.stop()
    with pytest.raises(OSError):  # reset or closed: not a sandbox answering after stop()
        conn.request("GET", "/_sandbox/stats")
        conn.getresponse().read()
    conn.close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = any_sandbox.url


def test_start_twice_is_refused(any_sandbox: Emulator) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        any_sandbox.start()


# --- ports by hand ------------------------------------------------------------------------


def _default_port(main: Callable[[list[str]], int]) -> int:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    found = re.search(r"--port PORT\s+0 picks a free port \(default\s+(\d+)\)", out.getvalue())
    assert found, out.getvalue()
    return int(found.group(1))


def _herald_ports(tmp_path: Path) -> set[int]:
    config = config_from_dict({"database": "sqlite:///h.db",
                               "apps": {"default": {"appid": "wx1", "secret": "s"}}},
                              base_dir=tmp_path, env={})
    listens = (config.web.listen, config.metrics.listen, config.console.listen)
    return {int(listen.rsplit(":", 1)[1]) for listen in listens if listen}


def test_no_sandbox_takes_a_port_herald_listens_on_by_default(tmp_path: Path) -> None:
    herald = _herald_ports(tmp_path)
    assert herald == {8080, 9464, 9465}  # what the sandboxes' defaults are kept clear of
    defaults = {"wechat": _default_port(wechat.main), "sms": _default_port(sms.main),
                "webhook": _default_port(webhook.main)}
    assert defaults["wechat"] not in herald | {0}  # a fixed port the README can name
    assert not set(defaults.values()) & herald, defaults


def test_the_docs_point_api_base_at_the_sandbox_s_default_port() -> None:
    port = _default_port(wechat.main)
    texts = [(ROOT / name).read_text(encoding="utf-8")
             for name in ("README.md", "docs/getting-started.md", "quickstart.yaml")]
    bases = re.findall(r"api_base: http://127\.0\.0\.1:(\d+)", "\n".join(texts))
    assert len(bases) >= 2 and {int(b) for b in bases} == {port}
    assert not any("-m sandbox.wechat --port 8080" in t for t in texts)
