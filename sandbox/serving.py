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

    def close_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler


__all__ = ["TrackingServer"]
