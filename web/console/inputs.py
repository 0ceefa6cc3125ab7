"""Reading what a browser (or anyone) sends: paths, query strings, forms, cookies.

Every byte is hostile. Text must be valid UTF-8 without control characters (a NUL
would reach PostgreSQL as an error, a newline a log line), each value is capped in
length, numbers are ASCII digits in range, a field is given once (two values for one
name leave it unclear which one was checked), flags are "1" or absent, and anything
else is a BadInput: the console answers 400 with the message, never a traceback, and
before anything is changed.

Redirect targets (`next` after login, `back` after an action) are paths on this
console and leave percent-encoded (redirect_target): a Location header holds ASCII
only, and a non-Latin-1 one failed in the server after the action was done.

Messages never quote the value they refuse: it may be a secret pasted in the wrong
box, and a shortened one would slip past the page's scrub of configured secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_from_bytes

from db.models import STATUSES

MAX_FIELDS = 40
MAX_TARGET = 2000  # characters of a redirect target
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # no UTF-8 holds one; no database stores one
_DIGITS = re.compile(r"[0-9]{1,19}")
_PLAIN_NAME = re.compile(r"[a-z_]{1,32}")
INT64_MAX = 2 ** 63 - 1
# what a URL's path and query may hold as it is (RFC 3986: unreserved, sub-delims,
# ":@/?" and the "%" of an escape); everything else is percent-encoded, UTF-8 first
_URL_SAFE = "/?:@!$&'()*+,;=-._~%"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class BadInput(ValueError):
    """The request's own fault: 400 with this message."""

    status = 400


class NotFound(LookupError):
    status = 404


def native_to_text(value: str, what: str) -> str:
    """A WSGI 'native string' (bytes as latin-1, PEP 3333) as UTF-8 text."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadInput(f"the {what} is not valid UTF-8") from None


def parse_pairs(raw: bytes, what: str) -> dict[str, str]:
    """application/x-www-form-urlencoded bytes -> {name: value}, strictly: raw bytes
    and %-escapes alike must be UTF-8, and each name comes once."""
    try:
        text_value = raw.decode("utf-8")
        pairs = parse_qsl(text_value, keep_blank_values=True, max_num_fields=MAX_FIELDS,
                          encoding="utf-8", errors="strict")
    except UnicodeDecodeError:  # (a ValueError: caught first)
        raise BadInput(f"the {what} is not valid UTF-8") from None
    except ValueError:
        raise BadInput(f"the {what} has more than {MAX_FIELDS} fields") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise BadInput(f"the {what} gives {_name(name)} more than once")
        out[name] = value
    return out


def _name(name: str) -> str:
    """A field's name for a message: as it is when it looks like one of ours."""
    return repr(name) if plain_name(name) else "a field"


def plain_name(name: str) -> bool:
    """Whether a field name looks like one of the console's (and may be quoted)."""
    return _PLAIN_NAME.fullmatch(name) is not None


def query_of(environ: dict) -> dict[str, str]:
    raw = str(environ.get("QUERY_STRING", ""))
    if len(raw) > 16 * 1024:
        raise BadInput("the query string is too long (16 KiB at most)")
    try:
        data = raw.encode("latin-1")  # a WSGI native string holds bytes as latin-1
    except UnicodeEncodeError:
        raise BadInput("the query string is not bytes as the server should pass it") from None
    return parse_pairs(data, "query string")


def text(fields: dict[str, str], name: str, *, limit: int, label: str | None = None
         ) -> str | None:
    """An optional text field: stripped, None when empty, BadInput when hostile."""
    value = fields.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    label = label or name
    if len(value) > limit:
        raise BadInput(f"{label} is too long ({len(value)} characters; {limit} at most)")
    if _CONTROL.search(value):
        raise BadInput(f"{label} contains control characters")
    if _SURROGATE.search(value):  # parse_pairs lets none through; this is the second net
        raise BadInput(f"{label} is not valid text")
    return value


def integer(value: str | None, name: str, *, low: int = 0, high: int = INT64_MAX
            ) -> int | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.startswith("-") and low < 0 and _DIGITS.fullmatch(value[1:]):
        number = -int(value[1:])
    elif _DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise BadInput(f"{name} must be a whole number (ASCII digits)")
    if not low <= number <= high:
        raise BadInput(f"{name} must be between {low} and {high}")
    return number


def row_id(value: str) -> int:
    """A msg_list id from a path segment."""
    number = integer(value, "the message id", low=1)
    if number is None:
        raise BadInput("the message id is missing")
    return number


def status(fields: dict[str, str]) -> str | None:
    value = text(fields, "status", limit=16)
    if value is not None and value not in STATUSES:
        raise BadInput(f"status must be one of {', '.join(STATUSES)}")
    return value


def id_list(value: str | None, *, limit: int = 5000) -> tuple[int, ...]:
    """'1,2 3' -> (1, 2, 3): ids named in a form."""
    if not value:
        return ()
    parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
    if len(parts) > limit:
        raise BadInput(f"at most {limit} ids at once")
    return tuple(dict.fromkeys(row_id(p) for p in parts))


def flag(fields: dict[str, str], name: str) -> bool:
    """A checkbox or hidden flag: "1" is on; absent or empty is off; anything else is
    not what the console's forms send."""
    value = fields.get(name)
    if value is None or value == "":
        return False
    if value != "1":
        raise BadInput(f"{name} must be 1 or absent")
    return True


def free_text(fields: dict[str, str], name: str, *, limit: int) -> str | None:
    """A multi-line text field (a JSON box): lines and tabs allowed, other control
    characters not."""
    value = fields.get(name)
    if value is None:
        return None
    if len(value) > limit:
        raise BadInput(f"{name} is too long ({len(value)} characters; {limit} at most)")
    if _CONTROL_BUT_LINES.search(value):
        raise BadInput(f"{name} contains control characters")
    if _SURROGATE.search(value):
        raise BadInput(f"{name} is not valid text")
    return value


def shorten(value: str, size: int = 40) -> str:
    return value if len(value) <= size else value[:size] + "…"


def one_of(value: str | None, allowed: Iterable[str], name: str) -> str | None:
    allowed = tuple(allowed)
    if value is not None and value not in allowed:
        raise BadInput(f"{name} must be one of {', '.join(allowed)}")
    return value


def redirect_target(value: str | None, what: str) -> str:
    """Where to send the browser after a login (`next`) or an action (`back`): a path
    on this console, percent-encoded (ASCII, as a Location header must be). Absent or
    empty: the overview; the login page itself: the overview too. Anything else is
    refused, so the request changes nothing: another origin (//host, a scheme), a
    backslash (browsers read /\\host as //host), control characters (a split header),
    or over MAX_TARGET characters."""
    if value is None or value == "":
        return "/"
    if (not value.startswith("/") or value.startswith("//") or "\\" in value
            or _CONTROL.search(value) or _SURROGATE.search(value) or len(value) > MAX_TARGET):
        raise BadInput(f"{what} must be a path on this console (one leading /, no host) "
                       "/ 跳转地址必须是本站路径")
    if value == "/login" or value.startswith(("/login?", "/login/")):
        return "/"
    return url_escape(value)


def url_escape(value: str | bytes) -> str:
    """A path and query as ASCII: escapes (%XX) kept, a stray % and every character a
    URL cannot hold as it is percent-encoded (text as UTF-8)."""
    if isinstance(value, bytes):
        encoded = quote_from_bytes(value, safe=_URL_SAFE)
    else:
        encoded = quote(value, safe=_URL_SAFE)
    return _STRAY_PERCENT.sub("%25", encoded)


def request_target(path: str, raw_query: str) -> str:
    """The path (decoded text) and raw query string (a WSGI native string) a request
    named, as one ASCII path: where a guest goes back to after logging in."""
    target = quote(path, safe="/:@!$&'()*+,;=-._~")
    if raw_query:
        try:
            target += "?" + url_escape(raw_query.encode("latin-1"))
        except UnicodeEncodeError:
            pass  # not bytes as a server passes them: the page without its query
    return target


__all__ = ["BadInput", "NotFound", "flag", "free_text", "id_list", "integer",
           "native_to_text", "one_of", "parse_pairs", "plain_name", "query_of", "redirect_target",
           "request_target", "row_id", "shorten", "status", "text", "url_escape"]
