"""The HTTP server the sandboxes share: threads per connection, a deep accept backlog,
and a record of open connections so a sandbox can cut them (a test's "reset" fault,
a stop that must not wait for a client's keep-alive).

Only the plumbing is shared. What each sandbox checks (signatures above all) stays in
its own module, written apart from the sender it checks on purpose.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any


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


__all__ = ["TrackingServer"]
