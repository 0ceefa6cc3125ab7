"""The console's last line of defence for secrets: what it knows to be secret, and a
scrub of everything it sends (each page, each redirect) and logs.

No page selects a secret in the first place (the token column is never read, secret
settings and heartbeat keys show "(hidden)"), but a secret can still arrive from
elsewhere: pasted into a search box and shown back, held in a row an application or a
remote wrote, named in a `back=` that becomes a Location. So every configured secret
(any Secret in the config, the database password, the console users' scrypt hashes and
their digests, a template's secret settings) is masked on the way out, in each form it
may take there (as is, HTML-escaped, percent-encoded once or twice), and when it is
cut short too: a page shortens long values ("…", "..."), and WINDOW leading
characters of a secret are as good as the secret to someone guessing the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from markupsafe import escape

from config import Secret
from web.console.inputs import url_escape

if TYPE_CHECKING:
    from config import Config
    from templates import TemplateSet

MIN_SCRUBBED = 6  # shorter configured secrets would mask ordinary words
WINDOW = 16  # this many leading characters of a secret are masked as the secret
MASK = b"&lt;secret&gt;"  # as a page shows it; a Location gets "/" instead
LOG_MASK = b"<redacted>"  # as logs.redact writes it


def configured_secrets(cfg: Config, templates: TemplateSet) -> list[str]:
    """Every secret value the config and templates hold, as text."""
    found: list[str] = []

    def add(value: object) -> None:
        text = value.reveal() if isinstance(value, Secret) else value
        if isinstance(text, str) and len(text) >= MIN_SCRUBBED:
            found.append(text)

    _walk(cfg, add, depth=0)
    add(urlsplit(cfg.database).password)
    for user in cfg.console.users.values():  # (each whole hash is a Secret, found by the walk)
        # the digest alone is what a guesser wants
        add(user.password_hash.reveal().rsplit("$", 1)[-1])
    for tpl in templates.templates.values():
        for key, value in tpl.settings.items():
            if "secret" in key or "token" in key:
                add(value)
    return sorted(set(found), key=len, reverse=True)


def _walk(value: object, add: Callable[[object], None], depth: int) -> None:
    """Every Secret in a config: its dataclasses, mappings and sequences."""
    if depth > 8 or value is None or isinstance(value, str | bytes | int | float | bool):
        return
    if isinstance(value, Secret):
        add(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _walk(getattr(value, f.name), add, depth + 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            _walk(item, add, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _walk(item, add, depth + 1)


def forms(secret: str) -> set[str]:
    """The ways the console itself may write a secret: as text, HTML-escaped, and as
    its links and redirects encode it (quote, quote_plus, url_escape, and a guest's
    address encoded once more as ?next=). A Location is also checked decoded (holds)."""
    out = set()
    for encoded in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
                    url_escape(secret)):
        for text in (encoded, quote(encoded), quote(encoded, safe="")):
            out |= {text, str(escape(text))}
    return out


class Scrubber:
    """Masks each secret, whole or its first WINDOW characters and more, in any of its
    forms. One regular-expression pass finds where a secret may start; each candidate
    is then matched as far as it goes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if len(s) >= MIN_SCRUBBED]
        by_head: dict[bytes, list[bytes]] = {}
        for secret in self.secrets:
            for form in forms(secret):
                data = form.encode("utf-8")
                by_head.setdefault(data[:WINDOW], []).append(data)
        self._by_head = by_head
        self._pattern = (re.compile(b"|".join(re.escape(h) for h in sorted(
            by_head, key=len, reverse=True))) if by_head else None)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, body: bytes, mask: bytes = MASK) -> bytes:
        if self._pattern is None:
            return body
        out: list[bytes] = []
        at = 0
        while (m := self._pattern.search(body, at)) is not None:
            start = m.start()
            size = self._masked(body, start)
            if size:
                out += [body[at:start], mask]
                at = start + size
            else:
                out.append(body[at:start + 1])
                at = start + 1
        if not out:
            return body
        out.append(body[at:])
        return b"".join(out)

    def _masked(self, body: bytes, start: int) -> int:
        """How many bytes from `start` are a secret (or its cut-short start), or 0.
        (Every head that matches here is tried: one secret may begin another.)"""
        best = 0
        for head, found in self._by_head.items():
            if not body.startswith(head, start):
                continue
            for form in found:
                n = _common(body, start, form)
                if n == len(form) or n >= WINDOW:
                    best = max(best, n)
        return best

    def holds(self, text: str) -> bool:
        """Whether `text` (a Location) shows a secret, as it is or %-decoded once or
        twice: a client may encode each character of a URL as it likes, and the
        console keeps its escapes."""
        for _ in range(3):
            data = text.encode("utf-8", "backslashreplace")
            if self(data) != data:
                return True
            text = unquote(text)
        return False


class LogScrub(logging.Filter):
    """On the console's logger: each record's text (and traceback) through the scrub of
    every live console. logs.redact masks each registered secret too, but only whole
    and one by one (a digest masked first leaves the rest of its hash); this masks the
    longest match, and a cut-short secret."""

    def __init__(self) -> None:
        super().__init__()
        self._sources: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(self, console: Any) -> None:
        """Scrub with `console.scrubber` (a property: it follows template reloads) for
        as long as the console lives."""
        self._sources.add(console)

    def filter(self, record: logging.LogRecord) -> bool:
        scrubs: list[Callable[..., bytes]] = [c.scrubber for c in list(self._sources)]
        if not scrubs:
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        message = record.getMessage()
        clean = _through(message, scrubs)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = _through(record.exc_text, scrubs)
        return True


def _through(text: str, scrubs: list[Callable[..., bytes]]) -> str:
    data = text.encode("utf-8", "backslashreplace")
    clean = data
    for scrub in scrubs:
        clean = scrub(clean, LOG_MASK)
    return text if clean == data else clean.decode("utf-8", "replace")


LOG_SCRUB = LogScrub()
logging.getLogger("herald.console").addFilter(LOG_SCRUB)


def _common(body: bytes, start: int, form: bytes) -> int:
    n = 0
    limit = min(len(form), len(body) - start)
    while n < limit and body[start + n] == form[n]:
        n += 1
    return n


__all__ = ["LOG_MASK", "LOG_SCRUB", "MASK", "MIN_SCRUBBED", "WINDOW", "LogScrub", "Scrubber",
           "configured_secrets", "forms"]
