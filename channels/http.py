"""HTTP plumbing shared by the channels: one pooled session, failures as readable text.

requests wraps a refused connection four deep (ConnectionError > MaxRetryError >
NewConnectionError > ConnectionRefusedError) and its message puts the cause last,
after the URL, where a length cap cuts it off ("Failed to establish "). root_cause()
walks to the innermost error and says what happened first, then where.
"""

from __future__ import annotations

import os
import socket
import ssl

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

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
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


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
        pool = getattr(e, "pool", None) or getattr(e, "conn", None)
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


__all__ = ["make_session", "root_cause"]
