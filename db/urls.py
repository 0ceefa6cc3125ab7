"""Database URLs: the one place that reads a URL's scheme.

sqlite:///path (relative to the config's folder), postgresql://..., postgres://...,
mysql://...; each server scheme may add +pool. `engine_of` names the engine a URL
asks for (or raises UnsupportedDatabase: an unknown scheme is an error, never a silent
SQLite); `normalize` is what the config checks (and makes a relative SQLite path
absolute); `url_params` are the connection parameters.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from playhouse.db_url import parse

# URL scheme -> engine name (the Dialect's name)
SCHEMES: Final = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres",
                  "mysql": "mysql"}
ALLOWED: Final = "allowed schemes: sqlite, postgres, postgresql, mysql, each optionally +pool"


class UnsupportedDatabase(ValueError):
    """A database URL whose scheme names no engine Herald supports."""


def scheme_of(url: str) -> str:
    """The URL's scheme, lower case ('' when it has none)."""
    return url.split(":", 1)[0].lower() if "://" in url else ""


def engine_of(url: str) -> str:
    """The engine a database URL names: sqlite, postgres or mysql."""
    scheme = scheme_of(url)
    engine, _, variant = scheme.partition("+")
    if variant in ("", "pool") and engine in SCHEMES:
        return SCHEMES[engine]
    raise UnsupportedDatabase(
        f"database: unsupported URL scheme {scheme or url[:20]!r} (use sqlite:///file.db, "
        "postgresql://user@host/db or mysql://user@host/db; +pool for a connection pool)")


def pooled(url: str) -> bool:
    """A +pool URL: connections are kept open between job runs and requests."""
    return "+pool" in url.split(":", 1)[0].lower()


def url_params(url: str) -> dict[str, Any]:
    """Connection parameters of a database URL (database, user, host, port, ...).

    User and password are percent-decoded, as libpq and the mysql client do, so a
    password holding '@', ':' or '/' can be written in the URL (as %40, %3A, %2F).
    """
    return parse(url, unquote_password=True, unquote_user=True)


def database_file(url: str) -> Path | None:
    """The file of an embedded (sqlite:///) database's URL, else None (a server's)."""
    if not url.startswith("sqlite:"):
        return None
    path = str(url_params(url).get("database") or "")
    return Path(path) if path else None


def normalize(url: str, base_dir: Path) -> str:
    """A database URL as the config holds it; ValueError saying what is wrong.

    A relative SQLite path is made absolute against `base_dir`.
    """
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", url.strip(), re.DOTALL)
    if match is None:
        raise ValueError(f"is not a database URL (e.g. sqlite:///herald.db; {ALLOWED})")
    scheme, rest = match.group(1).lower(), match.group(2)
    name, plus, variant = scheme.partition("+")
    if name not in SCHEMES or (plus and variant != "pool"):
        raise ValueError(f"has an unsupported scheme {scheme!r} ({ALLOWED})")
    if SCHEMES[name] == "sqlite":
        if not rest.startswith("/"):
            raise ValueError("names a host, which SQLite URLs have none of (use "
                             "sqlite:///relative/path.db or sqlite:////absolute/path.db)")
        file_part, question, query = rest[1:].partition("?")
        # The queue must outlive the process and be shared with whoever inserts rows.
        if file_part in ("", ":memory:") or "mode=memory" in query:
            raise ValueError("is not a database file (an in-memory SQLite database cannot "
                             "hold a queue; use e.g. sqlite:///herald.db)")
        absolute = (base_dir / file_part).resolve()
        return f"{scheme}:///{absolute}{question}{query}"
    parts = urlsplit(url.strip())
    try:
        _ = parts.port  # urlsplit only validates the port when asked for it
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.path.strip("/"):
        raise ValueError(f"names no database (e.g. {name}://user@host/herald)")
    return url.strip()


__all__ = ["ALLOWED", "SCHEMES", "UnsupportedDatabase", "engine_of", "normalize", "pooled",
           "scheme_of", "database_file", "url_params"]
