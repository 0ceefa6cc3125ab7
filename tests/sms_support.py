"""What the SMS tests share: requests signed by the official SDK, and a callback receiver.

The SDK is used here as the reference signer, so the sandbox and Herald's client are
each held against code neither of them wrote.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

from tencentcloud.common import abstract_client, credential
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import sms_client

REGION = "ap-guangzhou"


def sdk_client(host: str, secret_id: str, secret_key: str, *, timeout: int = 5,
               region: str = REGION) -> sms_client.SmsClient:
    """The SDK's SmsClient pointed at a plain-HTTP host such as '127.0.0.1:PORT'."""
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=host,
                                                    reqTimeout=timeout))
    return sms_client.SmsClient(credential.Credential(secret_id, secret_key), region, profile)


def sdk_signed(params: dict[str, Any], *, host: str, secret_id: str, secret_key: str,
               timestamp: int, region: str = REGION) -> RequestInternal:
    """A SendSms request as the SDK builds and signs it (headers and body), at a fixed
    timestamp, without sending it."""
    client = sdk_client(host, secret_id, secret_key, region=region)
    req = RequestInternal(host, "POST", "/", header={})
    with mock.patch.object(abstract_client.time, "time", return_value=float(timestamp)):
        client._build_req_with_tc3_signature("SendSms", params, req)
    return req


class Receiver:
    """A tiny status-callback endpoint on loopback. `answers` is consumed one per POST
    (status, body); when it runs out every POST gets Herald's reply."""

    OK = (200, b'{"result":0,"errmsg":"OK"}')

    def __init__(self, answers: list[tuple[int, bytes]] | None = None) -> None:
        self.answers = list(answers or [])
        self.posts: list[Any] = []
        # Re-entrant: wait()'s condition calls reports(), which takes the same lock.
        self._lock = threading.RLock()
        self._got = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(size))
                with receiver._got:
                    receiver.posts.append(body)
                    status, reply = (receiver.answers.pop(0) if receiver.answers
                                     else Receiver.OK)
                    receiver._got.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tencent/sms/status/tok"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item for post in self.posts for item in post]

    def wait(self, condition: Callable[[Receiver], bool], timeout: float = 5.0) -> bool:
        with self._got:
            return self._got.wait_for(lambda: condition(self), timeout)


@contextmanager
def fixed_server(answer: Callable[[BaseHTTPRequestHandler, bytes], tuple[int, str, bytes]]
                 ) -> Iterator[str]:
    """A one-off HTTP server whose every POST is answered by `answer(handler, body)` ->
    (status, content type, body); yields its URL. For answers no sandbox would give."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, content_type, reply = answer(self, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
