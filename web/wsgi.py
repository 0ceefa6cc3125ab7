"""The little WSGI toolkit the web side is written with: a request with a capped body,
responses, and a router. No framework: the push receiver needs four routes and must
never read more than 64 KiB of a hostile body; the console a few dozen.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

MAX_BODY = 64 * 1024
log = logging.getLogger("herald.web")

# The SMS status callback's token is the last segment of its URL path: every line that
# shows a path (ours, and the WSGI server's own) shows this instead.
_SECRET_PATH = re.compile(r"(/tencent/sms/status/)[^/\s?#]*")


class BodyTooLarge(Exception):
    pass


@dataclass
class Request:
    environ: Environ
    params: dict[str, str] = field(default_factory=dict)  # from the route pattern
    _body: bytes | None = None

    @property
    def method(self) -> str:
        return str(self.environ.get("REQUEST_METHOD", "GET")).upper()

    @property
    def path(self) -> str:
        return str(self.environ.get("PATH_INFO", "/")) or "/"

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, the first value of each (WeChat sends each once)."""
        raw = parse_qs(str(self.environ.get("QUERY_STRING", "")), keep_blank_values=True,
                       max_num_fields=64)
        return {k: v[0] for k, v in raw.items()}

    @property
    def remote(self) -> str:
        return str(self.environ.get("REMOTE_ADDR", "?"))

    def header(self, name: str) -> str | None:
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is None and name.lower() == "content-type":
            value = self.environ.get("CONTENT_TYPE")
        return None if value is None else str(value)

    def body(self, limit: int = MAX_BODY) -> bytes:
        """The body, read once; BodyTooLarge past `limit` (never reads more than that)."""
        if self._body is not None:
            return self._body
        length = self.environ.get("CONTENT_LENGTH") or "0"
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size > limit or size < 0:
            raise BodyTooLarge(f"{length} bytes")
        stream = self.environ["wsgi.input"]
        data = stream.read(size) if size else b""
        self._body = data
        return data

    def form(self) -> dict[str, str]:
        """A urlencoded form body, the first value of each field."""
        text = self.body().decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True,
                                             max_num_fields=200).items()}

    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in str(self.environ.get("HTTP_COOKIE", "")).split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name:
                out.setdefault(name, value)
        return out


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        phrase = HTTPStatus(self.status).phrase
        headers = [("Content-Type", self.content_type),
                   ("Content-Length", str(len(self.body))), *self.headers]
        start_response(f"{self.status} {phrase}", headers)
        return [self.body]


def text(body: str, status: int = 200) -> Response:
    return Response(status, body.encode("utf-8"))


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"),
                    "application/json; charset=utf-8")


Handler = Callable[[Request], Response]


class Router:
    """Routes '/wechat/push/<app>' style patterns to handlers, method by method."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], Mapping[str, Handler]]] = []

    def add(self, pattern: str, **methods: Handler) -> None:
        regex = re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((re.compile(f"^{regex}$"), {m.upper(): h for m, h in methods.items()}))

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        for regex, methods in self._routes:
            m = regex.match(request.path)
            if m is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allow = ", ".join(sorted(methods))
                return Response(405, b"method not allowed\n",
                                headers=[("Allow", allow)])(environ, start_response)
            request.params = m.groupdict()
            return handler(request)(environ, start_response)
        return text("not found\n", 404)(environ, start_response)


def loggable(text: str) -> str:
    """`text` (a path, or a line holding one) with the callback token masked."""
    return _SECRET_PATH.sub(r"\1<token>", text)


def guarded(app: WSGIApp) -> WSGIApp:
    """`app`, with every exception it lets out answered 500 here and logged in one line
    that never shows the callback token: the WSGI server's own error line ("Exception
    while serving <path>" and a traceback) would print the path and whatever the
    exception holds. An exception here is Herald's fault (input gets a 4xx), so the
    line names the exception type for whoever fixes it."""
    from logs import redact

    def guarded_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return app(environ, start_response)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            path = loggable(str(environ.get("PATH_INFO", "/")))[:200]
            log.error("internal error serving %s %s: %s: %s",
                      str(environ.get("REQUEST_METHOD", "?"))[:8], path,
                      type(exc).__name__, loggable(redact(str(exc)))[:200])
            return Response(500, b"internal error\n")(environ, start_response)

    return guarded_app


class MaskPaths(logging.Filter):
    """On the WSGI server's logger: its lines show request paths ("Client disconnected
    while serving <path>", "Exception while serving <path>"); mask the token in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = loggable(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_text:
            record.exc_text = loggable(record.exc_text)
        return True


def mask_server_logs(name: str = "waitress") -> None:
    """Install MaskPaths on the WSGI server's logger, once."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, MaskPaths) for f in logger.filters):
        logger.addFilter(MaskPaths())


__all__ = ["MAX_BODY", "BodyTooLarge", "Environ", "Request", "Response", "Router",
           "MaskPaths", "StartResponse", "WSGIApp", "guarded", "json_response", "loggable",
           "mask_server_logs", "text"]
