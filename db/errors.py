"""Database failures in one sentence a person can act on, naming the database.

The drivers say the same few things in their own ways: psycopg2 puts the cause after
'connection to server at "h", port p failed: ' and adds a hint line, PyMySQL gives
(code, message), SQLite a bare message. describe() keeps the cause (never cut off
before it) and says which database it was, its password masked.
"""

from __future__ import annotations

import re

from config.model import mask_url
from logs import redact

# MySQL/MariaDB client and server codes an operator meets when connecting
_MYSQL = {
    1044: "this account may not use the database",
    1045: "access denied (wrong user or password)",
    1049: "the database does not exist (create it, e.g. CREATE DATABASE herald)",
    1698: "access denied for this account",
    2003: "cannot connect: is the server running on that host and port?",
    2005: "the host name cannot be resolved",
    2013: "the connection was lost",
}
_PG_PREFIX = re.compile(r'^connection to server (?:at|on) .*? failed: ', re.S)


def describe(exc: BaseException, url: str) -> str:
    """'database postgresql://u@h/x: the database "x" does not exist ...'."""
    return f"database {mask_url(url)}: {cause(exc)}"


def cause(exc: BaseException) -> str:
    """The driver's message reduced to its cause, on one line."""
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        code, message = args[0], str(args[1])
        hint = _MYSQL.get(code)
        text = f"{hint} ({code}: {message})" if hint else f"{code}: {message}"
        return redact(text)
    text = str(exc).strip() or type(exc).__name__
    first, *rest = text.splitlines()
    first = _PG_PREFIX.sub("", first).replace("FATAL:  ", "").strip()
    if "does not exist" in first and first.startswith("database"):
        first += " (create it, e.g. createdb, or fix the name in `database`)"
    elif first.lower().startswith("connection refused"):
        first = "connection refused: is the server running on that host and port?"
    elif "could not translate host name" in first:
        first = first.replace("could not translate host name", "unknown host")
    elif not first and rest:
        first = rest[0].strip()
    return redact(first)


__all__ = ["cause", "describe"]
