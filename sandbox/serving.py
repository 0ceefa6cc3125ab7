"""The HTTP plumbing the sandboxes share: the server (threads per connection, a deep
accept backlog, a record of open connections so a sandbox can cut them), one request
handler that reads the body and hands the request to its sandbox, the answers every
sandbox gives alike (JSON, injected transport faults, the /_sandbox/ control API), their
start/stop life cycle and their command line's port file and signal handling.

Only the plumbing is shared. What each sandbox checks (signatures above all) stays in
its own module, written apart from the sender it checks on purpose.

Built for a benchmark of ~1,000 requests a second over 64 keep-alive connections on two
cores: one thread per connection (not per request), one write per answer, no logging.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

__all__ = [
    "TIMEOUT_HOLD",
    "Emulator",
    "Handler",
    "TrackingServer",
    "json_bytes",
    "loads",
    "serve_from_command_line",
]

# Upper bound for a 'timeout' fault: long enough for any client timeout a test would use,
# short enough that a forgotten sandbox does not pin a thread forever.
TIMEOUT_HOLD = 60.0

HTTP_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# struct linger {int l_onoff; int l_linger;}: on with a zero timeout makes close() send RST.
_LINGER_RESET = struct.pack("ii", 1, 0)


def json_bytes(obj: Any) -> bytes:
    # ensure_ascii=False keeps Chinese values readable in /_sandbox/accepted; compact
    # separators because the benchmark pays for every byte.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON (a sandbox answers that itself)."""
    try:
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


class TrackingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The benchmark opens 64 connections at once; the default backlog of 5 would make
    # some of them wait for a SYN retransmit (a full second) before being accepted.
    request_queue_size = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        # counted so a benchmark can tell a client that keeps connections alive from one
        # that opens a connection per request
        self.connections_opened = 0
        self._serving: threading.Thread | None = None
        self.app: Emulator | None = None  # the sandbox the handler hands requests to
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
            self.connections_opened += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def serve_in_background(self, name: str) -> None:
        """serve_forever on a daemon thread. poll_interval bounds how long a stop waits
        for the loop to notice; the default 0.5 s adds up over a suite that starts a
        sandbox per test."""
        self._serving = threading.Thread(target=self.serve_forever,
                                         kwargs={"poll_interval": 0.05}, name=name,
                                         daemon=True)
        self._serving.start()

    def stop_serving(self) -> None:
        """Stop accepting, close the socket, cut the connections still open (an idle
        keep-alive connection would otherwise go on answering on its handler thread, so
        a pooled client could still reach a stopped sandbox), and wait for the loop."""
        self.shutdown()
        self.server_close()
        self.close_connections()
        if self._serving is not None:
            self._serving.join(timeout=5)
            self._serving = None

    def close_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler


class Handler(BaseHTTPRequestHandler):
    """Reads a request and hands it to the server's sandbox (Emulator.handle), which
    answers through reply() and the fault answers below: one write per answer."""

    protocol_version = "HTTP/1.1"
    # One write per response already; TCP_NODELAY also stops Nagle from holding that write
    # behind the client's delayed ACK on a kept-alive connection.
    disable_nagle_algorithm = True
    server: TrackingServer

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: at 1,000 requests a second stderr logging would cost more than the work.
        pass

    def version_string(self) -> str:  # the Server header of http.server's own errors
        app = self.server.app
        name = app.server_version if app is not None else "herald-sandbox"
        return f"{name} {self.sys_version}"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        app = self.server.app
        assert app is not None  # set by Emulator.start() before the server listens
        try:
            body = self._body(app.body_max) if method == "POST" else b""
        except ValueError:
            self.close_connection = True
            self.reply_json({"error": "bad Content-Length"}, 400)
            return
        path, _, query = self.path.partition("?")
        app.handle(self, method, path, query, body)

    def _body(self, limit: int | None) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        size = int(length)
        if size < 0:
            # read(-1) would wait for EOF, i.e. hang a keep-alive connection forever.
            raise ValueError(f"negative Content-Length {size}")
        if limit is not None and size > limit:
            raise ValueError(f"Content-Length {size} over {limit}")
        return self.rfile.read(size)

    # --- answers -----------------------------------------------------------------------

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        reason = "OK" if status == 200 else HTTP_REASONS.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)

    def reply_json(self, obj: Any, status: int = 200) -> None:
        self.reply(status, json_bytes(obj))

    def hang(self, release: threading.Event) -> None:
        """No answer at all, until the sandbox stops (bounded): the client's read timeout
        is what should fire."""
        release.wait(TIMEOUT_HOLD)
        self.close_connection = True

    def transport_fault(self, fault: str) -> None:
        """'reset' (a TCP RST), 'non_json' (HTML with HTTP 200) or 'http_NNN' (a gateway's
        error page)."""
        if fault == "reset":
            self.close_connection = True
            conn = self.connection
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            # rfile holds a reference to the socket; close both so the close happens now
            # (as an RST, thanks to the linger setting), not after the handler returns.
            self.rfile.close()
            conn.close()
        elif fault == "non_json":
            self.reply(200, b"<html>busy</html>", "text/html")
        else:
            status = int(fault[5:])
            reason = HTTP_REASONS.get(status, "Error")
            page = (
                f"<html><head><title>{status} {reason}</title></head>"
                f"<body><center><h1>{status} {reason}</h1></center></body></html>"
            )
            self.reply(status, page.encode("ascii"), "text/html")

    def control(self, method: str, name: str, body: bytes,
                views: Mapping[str, Callable[[], Any]],
                actions: Mapping[str, Callable[[dict[str, Any]], object]]) -> None:
        """The /_sandbox/<name> control API: GET a view as JSON; POST a JSON object of
        arguments to an action. A missing or malformed argument is a 400 naming it."""
        if method == "GET":
            view = views.get(name)
            if view is None:
                self.reply_json({"error": f"no such control GET {name}"}, 404)
            else:
                self.reply_json(view())
            return
        args = loads(body) if body else {}
        if not isinstance(args, dict):
            self.reply_json({"error": "body must be a JSON object"}, 400)
            return
        action = actions.get(name)
        if action is None:
            self.reply_json({"error": f"no such control POST {name}"}, 404)
            return
        try:
            action(args)
        except (KeyError, TypeError, ValueError) as exc:
            self.reply_json({"error": f"{type(exc).__name__}: {exc}"}, 400)
            return
        self.reply_json({"ok": True})


class Emulator:
    """A sandbox's life cycle: start() (or a with block) listens on host:port (0: a free
    port, then in self.port), stop() wakes every parked request and cuts every
    connection. Subclasses answer requests in handle()."""

    server_version: ClassVar[str] = "herald-sandbox"
    label: ClassVar[str] = "sandbox"  # in its thread's name and in misuse errors
    body_max: ClassVar[int | None] = None  # bytes a request body may have

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        # Set by stop(): wakes every request parked by a 'timeout' fault or a hold.
        self._release = threading.Event()
        self._server: TrackingServer | None = None

    def handle(self, http: Handler, method: str, path: str, query: str, body: bytes
               ) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.label} already started")
        self._release.clear()
        server = TrackingServer((self.host, self.port), Handler)
        server.app = self
        self._server = server
        self.port = server.server_address[1]
        server.serve_in_background(f"{self.label.replace(' ', '-')}:{self.port}")
        self._started()
        return self

    def _started(self) -> None:
        """After the server listens: start what else the sandbox runs."""

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._release.set()
        self._wake()
        server.stop_serving()
        self._stopped()

    def _wake(self) -> None:
        """Wake requests parked on conditions of the sandbox's own (stop() is under way)."""

    def _stopped(self) -> None:
        """After the server stopped: stop what else the sandbox runs."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.label} not started")
        return f"http://{self.host}:{self.port}"


# --- command line ------------------------------------------------------------------------


def add_listen_arguments(parser: argparse.ArgumentParser, default_port: int = 0) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"0 picks a free port (default {default_port})")
    parser.add_argument("--port-file", help="write the bound port here once listening")


def stop_on_signals() -> threading.Event:
    """An event SIGTERM and SIGINT set."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _write_port_file(path: str, port: int) -> None:
    # Write then rename, so a reader polling for the file never sees it half written.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def serve_from_command_line(sandbox: Emulator, stop: threading.Event,
                            port_file: str | None) -> int:
    """Run a started sandbox until `stop` is set (see stop_on_signals), then stop it."""
    try:
        if port_file:
            _write_port_file(port_file, sandbox.port)
        print(f"{sandbox.label} listening on {sandbox.url}", flush=True)
        # A timed wait, so the main thread gets back to the interpreter loop regularly and
        # the signal handler runs promptly.
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0
