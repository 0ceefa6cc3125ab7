"""Reading what a browser (or anyone) sends: paths, query strings, forms, cookies.

Every byte is hostile. Text must be valid UTF-8 without control characters (a NUL
would reach PostgreSQL as an error, a newline a log line), each value is capped in
length, numbers are ASCII digits in range, and anything else is a BadInput: the
console answers 400 with the message, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

from db.models import STATUSES

MAX_FIELDS = 40
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DIGITS = re.compile(r"[0-9]{1,19}")
INT64_MAX = 2 ** 63 - 1


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
    """application/x-www-form-urlencoded bytes -> {name: first value}, strictly: raw
    bytes and %-escapes alike must be UTF-8."""
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
        out.setdefault(name, value)
    return out


def query_of(environ: dict) -> dict[str, str]:
    raw = str(environ.get("QUERY_STRING", ""))
    if len(raw) > 16 * 1024:
        raise BadInput("the query string is too long (16 KiB at most)")
    return parse_pairs(raw.encode("latin-1", "replace"), "query string")


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
        raise BadInput(f"{name} must be a whole number, not {shorten(value)!r}")
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


def shorten(value: str, size: int = 40) -> str:
    return value if len(value) <= size else value[:size] + "…"


def one_of(value: str | None, allowed: Iterable[str], name: str) -> str | None:
    allowed = tuple(allowed)
    if value is not None and value not in allowed:
        raise BadInput(f"{name} must be one of {', '.join(allowed)}")
    return value


def safe_next(value: str | None) -> str:
    """Where to go after login: a path on this site only (no open redirect)."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or _CONTROL.search(value) or len(value) > 2000 or value.startswith("/login")):
        return "/"
    return value


__all__ = ["BadInput", "NotFound", "id_list", "integer", "native_to_text", "one_of",
           "parse_pairs", "query_of", "row_id", "safe_next", "shorten", "status", "text"]
