"""A local webhook receiver for Herald's webhook channel, on 127.0.0.1.

It does what an application's receiver should: checks X-Herald-Timestamp (within a
window of its own clock) and X-Herald-Signature (sha256=<hex HMAC-SHA256(secret,
timestamp + "." + body)>) with its own code, written apart from channels/webhook.py on
purpose (a shared helper could sign and verify the same wrong thing), then records the
delivery. It can be told to answer given message ids with a status (4xx, 5xx), to be
slow for them, or to add latency to every answer, so the tests and the benchmark see
each answer class Herald must handle.

A verified POST is answered 200 {"id": "wh-<n>"} unless told otherwise; a bad or stale
signature 401, a body that is not a JSON object with an id 400; none of those count as
deliveries. Control: GET /_sandbox/stats, POST /_sandbox/config {latency},
/_sandbox/answer {id, status, times}, /_sandbox/slow {id, seconds, times},
/_sandbox/reset. Run alone with `python -m sandbox.webhook --secret-file F --port-file P`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from sandbox.serving import TrackingServer

__all__ = ["Delivery", "WebhookSandbox", "main"]

WINDOW = 300.0  # seconds a timestamp may be off the receiver's clock
BODY_MAX = 1024 * 1024
SLOW_HOLD_MAX = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified POST and what the receiver answered it."""

    path: str
    timestamp: str
    signature: str
    body: bytes
    message: dict[str, Any]
    status: int
    at: float


@dataclass(slots=True)
class _Rule:
    status: int | None  # answer this status (None: the normal answer, after a delay)
    delay: float
    times: int


@dataclass(slots=True)
class _Records:
    requests: list[Delivery] = field(default_factory=list)  # every verified POST
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (why, path)
    delivered: Counter[str] = field(default_factory=Counter)  # id -> 2xx answers


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    key = secret.encode("utf-8")
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body,
                                hashlib.sha256).hexdigest()


class WebhookSandbox:
    """A webhook receiver look-alike. Use as a context manager or start()/stop()."""

    def __init__(self, secret: str, *, latency: float = 0.0, window: float = WINDOW,
                 reply_id: bool = True, clock: Callable[[], float] = time.time,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.latency = float(latency)  # read without the lock: a float swap is atomic
        self.window = float(window)
        self.reply_id = reply_id
        self.clock = clock
        self.host = host
        self.port = port
        # re-entrant: wait()'s condition reads the records under the same lock
        self._lock = threading.RLock()
        self._got = threading.Condition(self._lock)
        self._rules: dict[str, list[_Rule]] = {}
        self._records = _Records()
        self._next_id = 1
        self._release = threading.Event()
        self._server: _Server | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> WebhookSandbox:
        if self._server is not None:
            raise RuntimeError("webhook sandbox already started")
        self._release.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self.port = server.server_address[1]
        server.serve_in_background(f"webhook-sandbox:{self.port}")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._release.set()
        server.stop_serving()

    def __enter__(self) -> WebhookSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("webhook sandbox not started")
        return f"http://{self.host}:{self.port}"

    # --- control ---------------------------------------------------------------------

    def answer(self, message_id: object, status: int, *, times: int = 1) -> None:
        """Answer the next `times` POSTs of this message id with `status`."""
        if not 200 <= int(status) <= 599:
            raise ValueError("status must be an HTTP status from 200 to 599")
        self._rule(message_id, _Rule(int(status), 0.0, times))

    def slow(self, message_id: object, seconds: float, *, times: int = 1) -> None:
        """Hold the next `times` answers for this message id `seconds` (capped)."""
        self._rule(message_id, _Rule(None, min(float(seconds), SLOW_HOLD_MAX), times))

    def _rule(self, message_id: object, rule: _Rule) -> None:
        if rule.times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._rules.setdefault(str(message_id), []).append(rule)

    def reset(self) -> None:
        with self._lock:
            self._records = _Records()
            self._rules.clear()

    # --- records ---------------------------------------------------------------------

    @property
    def requests(self) -> list[Delivery]:
        """Every verified POST, whatever it was answered."""
        with self._lock:
            return list(self._records.requests)

    @property
    def deliveries(self) -> list[Delivery]:
        """Verified POSTs answered 2xx: what the application took in."""
        with self._lock:
            return [d for d in self._records.requests if 200 <= d.status < 300]

    @property
    def rejected(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._records.rejected)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            r = self._records
            return {"requests": len(r.requests), "delivered": sum(r.delivered.values()),
                    "rejected": len(r.rejected),
                    "duplicates": sum(n - 1 for n in r.delivered.values() if n > 1)}

    def wait(self, condition: Callable[[WebhookSandbox], bool], timeout: float = 10.0) -> bool:
        """Wait until condition(self) holds, re-checked after every POST."""
        with self._got:
            return self._got.wait_for(lambda: condition(self), timeout)

    # --- judging (called by the handler) ------------------------------------------------

    def _verify(self, headers: Any, body: bytes) -> str | None:
        """Why this POST is refused, or None."""
        stamp = headers.get("X-Herald-Timestamp") or ""
        given = headers.get("X-Herald-Signature") or ""
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            return "missing or malformed X-Herald-Timestamp"
        if abs(self.clock() - int(stamp)) > self.window:
            return "stale X-Herald-Timestamp"
        expected = expected_signature(self.secret, stamp, body)
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
            return "bad X-Herald-Signature"
        return None

    def _take_rule(self, message_id: str) -> _Rule | None:
        with self._lock:
            rules = self._rules.get(message_id)
            if not rules:
                return None
            rule = rules[0]
            rule.times -= 1
            if rule.times <= 0:
                rules.pop(0)
            return rule

    def _record(self, delivery: Delivery) -> str:
        with self._got:
            self._records.requests.append(delivery)
            reply = ""
            if 200 <= delivery.status < 300:
                self._records.delivered[str(delivery.message.get("id"))] += 1
                reply = f"wh-{self._next_id}"
                self._next_id += 1
            self._got.notify_all()
            return reply

    def _reject(self, why: str, path: str) -> None:
        with self._got:
            self._records.rejected.append((why, path))
            self._got.notify_all()


class _Server(TrackingServer):
    sandbox: WebhookSandbox


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "herald-webhook-sandbox"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silent: the benchmark sends thousands a second

    def _reply(self, status: int, obj: Any) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Answer'}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)

    def _body(self) -> bytes | None:
        try:
            size = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            return None
        if not 0 <= size <= BODY_MAX:
            return None
        return self.rfile.read(size)

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        if self.path == "/_sandbox/stats":
            self._reply(200, sandbox.stats())
        else:
            self._reply(404, {"error": "no such page"})

    def do_POST(self) -> None:
        sandbox = self.server.sandbox
        body = self._body()
        if body is None:
            self.close_connection = True
            self._reply(400, {"error": "bad Content-Length"})
            return
        if self.path.startswith("/_sandbox/"):
            self._control(sandbox, self.path[len("/_sandbox/"):], body)
            return
        why = sandbox._verify(self.headers, body)
        if why is not None:
            sandbox._reject(why, self.path)
            self._reply(401, {"error": why})
            return
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if not isinstance(message, dict) or "id" not in message:
            sandbox._reject("body is not a JSON object with an id", self.path)
            self._reply(400, {"error": "body is not a JSON object with an id"})
            return
        rule = sandbox._take_rule(str(message["id"]))
        delay = sandbox.latency + (rule.delay if rule is not None else 0.0)
        if delay > 0:
            sandbox._release.wait(delay)
        status = rule.status if rule is not None and rule.status is not None else 200
        reply = sandbox._record(Delivery(
            self.path, self.headers["X-Herald-Timestamp"], self.headers["X-Herald-Signature"],
            body, message, status, time.monotonic()))
        if 200 <= status < 300:
            self._reply(status, {"id": reply} if sandbox.reply_id else {"ok": True})
        else:
            self._reply(status, {"error": f"told to answer {status}"})

    def _control(self, sandbox: WebhookSandbox, name: str, body: bytes) -> None:
        try:
            args = json.loads(body) if body else {}
            if not isinstance(args, dict):
                raise TypeError("body must be a JSON object")
            if name == "config":
                sandbox.latency = float(args.get("latency", sandbox.latency))
            elif name == "answer":
                sandbox.answer(args["id"], int(args["status"]), times=int(args.get("times", 1)))
            elif name == "slow":
                sandbox.slow(args["id"], float(args["seconds"]),
                             times=int(args.get("times", 1)))
            elif name == "reset":
                sandbox.reset()
            else:
                self._reply(404, {"error": f"no such control POST {name}"})
                return
        except (KeyError, TypeError, ValueError) as exc:
            self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._reply(200, {"ok": True})


# --- command line --------------------------------------------------------------------


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.webhook",
                                     description="A local webhook receiver for Herald.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--secret-file", required=True, help="a file holding the secret")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    with open(args.secret_file, encoding="utf-8") as handle:
        secret = handle.read().strip()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sandbox = WebhookSandbox(secret, latency=args.latency, host=args.host,
                             port=args.port).start()
    try:
        if args.port_file:
            _write_port_file(args.port_file, sandbox.port)
        print(f"webhook sandbox listening on {sandbox.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
