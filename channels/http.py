"""HTTP plumbing shared by the channels: one pooled session, a cheap caller beneath it
for the hot paths, failures as readable text.

requests wraps a refused connection four deep (ConnectionError > MaxRetryError >
NewConnectionError > ConnectionRefusedError) and its message puts the cause last,
after the URL, where a length cap cuts it off ("Failed to establish "). root_cause()
walks to the innermost error and says what happened first, then where.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.utils import get_environ_proxies
from urllib3.connectionpool import HTTPConnectionPool

from logs import redact


def make_session(base_url: str, pool_size: int, user_agent: str = "herald/1"
                 ) -> requests.Session:
    session = requests.Session()
    # requests re-reads the proxy and CA variables of the whole environment on every
    # request (several percent of the CPU of a busy sender); read them once instead.
    session.trust_env = False
    session.proxies = get_environ_proxies(base_url)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    adapter = RoutingAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


class RoutingAdapter(HTTPAdapter):
    """requests' adapter, which also tells a Caller where a URL's requests go: the
    connection pool (direct, through a proxy, with the session's CA bundle and client
    certificate) and the request target (a path, or the whole URL for a plain-HTTP
    proxy). Subclassing is how requests lets code use these two methods."""

    def route(self, url: str, session: requests.Session) -> tuple[HTTPConnectionPool, str]:
        prepared = PreparedRequest()
        prepared.prepare(method="POST", url=url)
        pool = self.get_connection_with_tls_context(prepared, session.verify,
                                                    session.proxies, session.cert)
        if not isinstance(pool, HTTPConnectionPool):  # urllib3 has no other kind
            raise TypeError(f"{type(pool).__name__} is not an HTTPConnectionPool")
        # as send() does next: with verify=True the pool is given requests' own bundle
        # (certifi's); without this it would check against the system's store instead
        self.cert_verify(pool, url, session.verify, session.cert)
        return pool, self.request_url(prepared, session.proxies)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes | None  # None: over the caller's cap, or a 5xx whose body was not read


class TransportError(Exception):
    """No answer: the connection failed or timed out. `text` is root_cause()'s, redacted."""

    def __init__(self, text: str, *, timed_out: bool) -> None:
        super().__init__(text)
        self.text = text
        self.timed_out = timed_out


# what a request or the reading of its answer raises when no usable answer came
_FAILURES = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError)


def _failure(exc: BaseException) -> TransportError:
    # urllib3 2 makes NewConnectionError a ConnectTimeoutError: a refused connection did
    # not time out (nothing was sent, no "it may have delivered")
    timed_out = (isinstance(exc, urllib3.exceptions.TimeoutError)
                 and not isinstance(exc, urllib3.exceptions.NewConnectionError))
    return TransportError(root_cause(exc), timed_out=timed_out)


class Caller:
    """Requests to one base URL over a session's pooled connections, without requests'
    per-call machinery (merging settings, cookies, hooks, redirects, a Response): a
    200-byte POST to a loopback server took about 500 us of CPU through
    Session.request and 220 us here, and the send threads of a busy daemon share one
    core. Proxies, the CA bundle, client certificates and the pool size stay the
    session's: the pool and the request target come from its RoutingAdapter, once per
    path. Redirects are not followed (an API answer that redirects is not an answer)."""

    def __init__(self, session: requests.Session, base_url: str, *,
                 timeout: tuple[float, float], answer_max: int) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.answer_max = answer_max
        self._timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._headers = {k: v if isinstance(v, str) else v.decode("latin-1")
                         for k, v in session.headers.items()}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._routes: dict[str, tuple[HTTPConnectionPool, str]] = {}

    def _route(self, path: str) -> tuple[HTTPConnectionPool, str]:
        route = self._routes.get(path)
        if route is None:
            url = self.base_url + path
            adapter = self.session.get_adapter(url)
            if not isinstance(adapter, RoutingAdapter):
                raise TypeError(f"{url}: the session's adapter is not a RoutingAdapter")
            route = self._routes[path] = adapter.route(url, self.session)
        return route

    def close(self) -> None:
        """Close the pools this caller took (urllib3's pool manager forgets a pool on
        clear() but leaves its connections open). Close the session after it, as
        WeChatClient.close does: then a later call takes fresh pools (with the session
        still open, its pool manager would hand back the closed ones)."""
        routes, self._routes = self._routes, {}
        for pool, _ in routes.values():
            pool.close()

    def exchange(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                 body: bytes | None = None) -> Reply:
        """One request (`body`: JSON already encoded). Raises TransportError when no
        answer came; a 5xx answer's body is not read."""
        try:
            pool, target = self._route(path)
            if query:
                target = f"{target}?{urlencode(query)}"
            resp = pool.urlopen(method, target, body=body,
                                headers=self._headers if body is None else self._json_headers,
                                retries=False, redirect=False, assert_same_host=False,
                                timeout=self._timeout, preload_content=False)
        except _FAILURES as exc:
            raise _failure(exc) from None
        whole = False
        try:
            if resp.status >= 500:
                return Reply(resp.status, None)
            if resp.status < 200 or resp.status in (204, 304):
                # http.client takes a 1xx other than 100 (a 103 Early Hints) for the answer,
                # and 204 and 304 end at their header: what follows on this connection (the
                # 103's real answer) belongs to no later request. Not read; closed below.
                return Reply(resp.status, b"")
            body_read = self._read_capped(resp)
            whole = body_read is not None
            return Reply(resp.status, body_read)
        except _FAILURES as exc:  # the body stopped coming, or came broken
            raise _failure(exc) from None
        finally:
            if not whole:
                resp.close()  # an unread rest must not reach the next request
            resp.release_conn()

    def _read_capped(self, resp: urllib3.BaseHTTPResponse) -> bytes | None:
        """The whole answer, or None when it is over answer_max (the rest is never read)."""
        length = resp.headers.get("Content-Length", "")
        # isascii: '²'.isdigit() is true, int('²') a ValueError
        if length.isascii() and length.isdigit() and int(length) > self.answer_max:
            return None
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.stream(64 * 1024):
            size += len(chunk)
            if size > self.answer_max:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        nxt = current.__cause__ or current.__context__
        if nxt is None:
            reason = getattr(current, "reason", None)
            if isinstance(reason, BaseException):
                nxt = reason
            elif current.args and isinstance(current.args[0], BaseException):
                nxt = current.args[0]
        current = nxt
    return seen


def root_cause(exc: BaseException, limit: int = 200) -> str:
    """'connection refused (127.0.0.1:9)'-style text for a transport failure."""
    chain = _chain(exc)
    inner = chain[-1]
    where = ""
    for e in chain:
        pool = getattr(e, "conn", None) or getattr(e, "pool", None)  # urllib3 2: conn first
        host, port = getattr(pool, "host", None), getattr(pool, "port", None)
        if host:
            where = f"{host}:{port}" if port else str(host)
            break
    if isinstance(inner, ConnectionRefusedError):
        what = "connection refused"
    elif isinstance(inner, ConnectionResetError):
        what = "connection reset by the server"
    elif isinstance(inner, socket.gaierror):
        what = f"host name lookup failed ({inner.strerror or inner})"
    elif isinstance(inner, ssl.SSLError):
        what = f"TLS error: {inner.reason or inner}"
    elif isinstance(inner, TimeoutError | socket.timeout) or "timed out" in str(inner).lower():
        what = "timed out"
    elif isinstance(inner, OSError) and inner.strerror:
        what = inner.strerror.lower()
    else:
        text = str(inner).strip() or type(inner).__name__
        # urllib3's own messages lead with the pool: keep what follows the last ': '
        what = text.rsplit("): ", 1)[-1]
    text = f"{what} ({where})" if where and where not in what else what
    return redact(text)[:limit]


__all__ = ["Caller", "Reply", "RoutingAdapter", "TransportError", "make_session", "root_cause"]
