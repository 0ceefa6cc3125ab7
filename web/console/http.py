"""The console's request and response: what a handler is given and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from web.console.auth import Session
from web.console.inputs import BadInput, parse_pairs, request_target
from web.wsgi import BodyTooLarge, Environ, Response
from web.wsgi import Request as RawRequest

SESSION_COOKIE = "herald_session"
LOGIN_COOKIE = "herald_login"
FORM_LIMIT = 64 * 1024


class Refused(Exception):
    """403 (or another status) with a message for the person: a missing CSRF token, a
    viewer trying an action."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Req:
    environ: Environ
    path: str  # decoded UTF-8
    query: dict[str, str]
    session: Session | None = None
    params: dict[str, str] = field(default_factory=dict)
    _form: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return str(self.environ.get("REQUEST_METHOD", "GET")).upper()

    @property
    def remote(self) -> str:
        return str(self.environ.get("REMOTE_ADDR", "?"))[:64]

    @property
    def target(self) -> str:
        """Path and query as requested, percent-encoded (for a redirect back after
        login)."""
        return request_target(self.path, str(self.environ.get("QUERY_STRING", "")))

    def form(self) -> dict[str, str]:
        if self._form is None:
            kind = (RawRequest(self.environ).header("content-type") or "").split(";")[0]
            if kind.strip().lower() not in ("application/x-www-form-urlencoded", ""):
                raise BadInput("send the form urlencoded (application/x-www-form-urlencoded)")
            length = str(self.environ.get("CONTENT_LENGTH") or "0").strip()
            if not (length.isascii() and length.isdigit()):
                raise BadInput("the Content-Length header is not a number of bytes")
            try:
                body = RawRequest(self.environ).body(FORM_LIMIT)
            except BodyTooLarge:
                raise BadInput(f"the form is too large ({FORM_LIMIT // 1024} KiB at most)"
                               ) from None
            self._form = parse_pairs(body, "form")
        return self._form

    def cookies(self) -> dict[str, str]:
        return RawRequest(self.environ).cookies()


def html(body: str, status: int = 200, headers: list[tuple[str, str]] | None = None
         ) -> Response:
    # a lone surrogate (a JSON "\\ud800" in a row's params, rendered) cannot be UTF-8:
    # shown as its escape rather than failing the page
    return Response(status, body.encode("utf-8", "backslashreplace"),
                    "text/html; charset=utf-8", list(headers or []))


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    # relative Location (RFC 9110 allows it): no Host header is trusted to build one.
    # Callers pass inputs.redirect_target's result; this is the last check, not the
    # first (a bug here is a 500 page, the action done already).
    if not (location.isascii() and location.startswith("/") and not location.startswith("//")
            and "\\" not in location and location.isprintable() and " " not in location):
        raise ValueError("a redirect to a Location that is no encoded path on this console")
    return Response(303, b"", "text/plain; charset=utf-8",
                    [("Location", location), *(headers or [])])


def cookie(name: str, value: str, *, max_age: int, secure: bool, path: str = "/") -> str:
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly",
             "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def context(req: Req, **extra: Any) -> dict[str, Any]:
    """What every page template is given."""
    session = req.session
    return {"user": session.user if session else None,
            "role": session.role if session else None,
            "operator": bool(session and session.operator),
            "csrf": session.csrf if session else "",
            "flash": session.pop_flash() if session else [],
            "path": req.path, **extra}


__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "Refused", "Req", "context", "cookie", "html",
           "redirect"]
