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
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.serving import (
    Emulator,
    Handler,
    add_listen_arguments,
    serve_from_command_line,
    stop_on_signals,
)

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


class WebhookSandbox(Emulator):
    """A webhook receiver look-alike. Use as a context manager or start()/stop()."""

    server_version = "herald-webhook-sandbox"
    label = "webhook sandbox"
    body_max = BODY_MAX

    def __init__(self, secret: str, *, latency: float = 0.0, window: float = WINDOW,
                 reply_id: bool = True, clock: Callable[[], float] = time.time,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.latency = float(latency)  # read without the lock: a float swap is atomic
        self.window = float(window)
        self.reply_id = reply_id
        self.clock = clock
        super().__init__(host, port)
        # re-entrant: wait()'s condition reads the records under the same lock
        self._lock = threading.RLock()
        self._got = threading.Condition(self._lock)
        self._rules: dict[str, list[_Rule]] = {}
        self._records = _Records()
        self._next_id = 1

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

    # --- the HTTP side (plumbing: sandbox/serving.py) ------------------------------------

    def handle(self, http: Handler, method: str, path: str, query: str, body: bytes
               ) -> None:
        if path.startswith("/_sandbox/"):
            http.control(method, path[len("/_sandbox/"):], body, {"stats": self.stats},
                         self._actions())
        elif method == "POST":
            self._serve_post(http, body)
        else:
            http.reply_json({"error": "no such page"}, 404)

    def _serve_post(self, http: Handler, body: bytes) -> None:
        why = self._verify(http.headers, body)
        if why is not None:
            self._reject(why, http.path)
            http.reply_json({"error": why}, 401)
            return
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if not isinstance(message, dict) or "id" not in message:
            self._reject("body is not a JSON object with an id", http.path)
            http.reply_json({"error": "body is not a JSON object with an id"}, 400)
            return
        rule = self._take_rule(str(message["id"]))
        delay = self.latency + (rule.delay if rule is not None else 0.0)
        if delay > 0:
            self._release.wait(delay)
        status = rule.status if rule is not None and rule.status is not None else 200
        reply = self._record(Delivery(
            http.path, http.headers["X-Herald-Timestamp"], http.headers["X-Herald-Signature"],
            body, message, status, time.monotonic()))
        if 200 <= status < 300:
            http.reply_json({"id": reply} if self.reply_id else {"ok": True}, status)
        else:
            http.reply_json({"error": f"told to answer {status}"}, status)

    def _actions(self) -> dict[str, Callable[[dict[str, Any]], object]]:
        return {
            "config": self._configure,
            "answer": lambda args: self.answer(args["id"], int(args["status"]),
                                               times=int(args.get("times", 1))),
            "slow": lambda args: self.slow(args["id"], float(args["seconds"]),
                                           times=int(args.get("times", 1))),
            "reset": lambda args: self.reset(),
        }

    def _configure(self, args: dict[str, Any]) -> None:
        self.latency = float(args.get("latency", self.latency))

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


# --- command line --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.webhook",
                                     description="A local webhook receiver for Herald.")
    add_listen_arguments(parser)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--secret-file", required=True, help="a file holding the secret")
    args = parser.parse_args(argv)
    with open(args.secret_file, encoding="utf-8") as handle:
        secret = handle.read().strip()
    stop = stop_on_signals()
    sandbox = WebhookSandbox(secret, latency=args.latency, host=args.host,
                             port=args.port).start()
    return serve_from_command_line(sandbox, stop, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
