"""Logging for journald: text for people or one JSON object a line, never a secret.

Every record is redacted when it is made (a LogRecord factory, so whatever handler
gets it): access tokens travel in the URL query string (urllib3 and requests print
URLs in their own messages), and app secrets sit in token requests. Known secret
values are masked wherever they appear; beyond those, only values in a credential's
own shape are masked: a query-string or form field (`access_token=...`, `secret=...`,
`client_secret=...`) and a quoted JSON or Python-dict field (`"secret": "..."`).
Ordinary words stay: "apps.default.secret: environment variable X is not set" and
"invalid app secret: check appsecret" read as written.

The known values are the secrets in force, kept in named groups that their owner
replaces whole: `set_secrets("config", ...)` when a configuration is loaded or reloaded,
`set_secrets("templates", ...)` for the webhook secrets of the templates in force, and
`remember_token(app, token)` for access tokens (the current and the previous one of each
app: a replaced token leaves the set, so it does not grow with every refresh).
`add_secret()` is for values a caller meets on the way (a candidate templates file, a
one-shot verb): a bounded set, oldest out first. Redaction is one compiled pattern,
rebuilt only when the set changes.

Importing this module changes nothing: `setup_logging()` (the daemons) or
`install_redaction()` (the CLI's entry point, the tests) installs the record factory.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from config.secret import Secret

if TYPE_CHECKING:
    from config import Config


class TemplateSet(Protocol):
    """templates.TemplateSet as template_secrets() reads it. Named here, not imported:
    templates/ imports the channels, which log through this module."""

    @property
    def templates(self) -> Mapping[str, Any]: ...

# A field whose name ends in access_token or secret (client_secret, appsecret, ...)
_NAME = r"[A-Za-z0-9_]*(?:access_token|secret)"
# name=value, as in a URL's query string or a form body: no space around '='
# (a value starting with '<' is a placeholder such as <redacted> or <token of app x>)
_QUERY_RE = re.compile(rf"(?i)(?<![A-Za-z0-9_])({_NAME}=)([^<&\s\"'#,;)}}\]][^&\s\"'#,;)}}\]]*)")
# "name": "value" or 'name': 'value' (JSON, a Python dict's repr)
_FIELD_RE = re.compile(rf"""(?i)(["']{_NAME}["']\s*:\s*)(["'])((?:(?!\2)[^\\]|\\.)*)\2""")
MASK = "<redacted>"
MIN_SECRET = 4  # shorter values would mask ordinary words
# A remote's text is masked before it is cut to an excerpt (a cut first could leave a
# secret's first half): this much of it is masked, then the excerpt taken.
CLEAN_WINDOW = 2048
LOOSE_MAX = 256  # add_secret()'s values kept at most (oldest out first)
TOKENS_KEPT = 2  # per app: the token in force and the one it replaced


class SecretSet:
    """The secret values to mask: named groups, replaced whole by their owners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, tuple[str, ...]] = {}
        self._loose: OrderedDict[str, None] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None

    def replace(self, group: str, values: Iterable[str | None]) -> None:
        kept = tuple(dict.fromkeys(v for v in values if v and len(v) >= MIN_SECRET))
        with self._lock:
            if self._groups.get(group, ()) == kept:
                return
            if kept:
                self._groups[group] = kept
            else:
                self._groups.pop(group, None)
            self._pattern = None

    def push(self, group: str, value: str | None, keep: int) -> None:
        """Put `value` first in `group`, keeping the `keep` newest."""
        if not value or len(value) < MIN_SECRET:
            return
        with self._lock:
            old = self._groups.get(group, ())
            if old[:1] == (value,):
                return
            self._groups[group] = (value, *(v for v in old if v != value))[:keep]
            self._pattern = None

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET:
            return
        with self._lock:
            if value in self._loose:
                self._loose.move_to_end(value)
                return
            self._loose[value] = None
            while len(self._loose) > LOOSE_MAX:
                self._loose.popitem(last=False)
            self._pattern = None

    def values(self) -> set[str]:
        with self._lock:
            out = set(self._loose)
            for group in self._groups.values():
                out.update(group)
            return out

    def loose(self) -> list[str]:
        """The values add() holds, oldest first."""
        with self._lock:
            return list(self._loose)

    def group(self, name: str) -> tuple[str, ...]:
        with self._lock:
            return self._groups.get(name, ())

    def pattern(self) -> re.Pattern[str] | None:
        found = self._pattern
        if found is not None:
            return found
        with self._lock:
            if self._pattern is None:
                values = set(self._loose)
                for group in self._groups.values():
                    values.update(group)
                if not values:
                    return None
                # longest first: a secret that contains another is masked whole
                self._pattern = re.compile("|".join(
                    re.escape(v) for v in sorted(values, key=len, reverse=True)))
            return self._pattern


SECRETS = SecretSet()


def set_secrets(group: str, values: Iterable[str | None]) -> None:
    """The secrets `group` holds now (what it held before is no longer masked)."""
    SECRETS.replace(group, values)


def remember_token(app: str, token: str | None) -> None:
    """`token` is `app`'s access token now; the previous one stays masked too."""
    SECRETS.push(f"token:{app}", token, TOKENS_KEPT)


def add_secret(value: str | None) -> None:
    """Mask this exact value wherever it would appear in a log line or error text."""
    SECRETS.add(value)


def _reveal(value: object) -> str | None:
    text = value.reveal() if isinstance(value, Secret) else value
    return text if isinstance(text, str) else None


def config_secrets(cfg: Config) -> list[str]:
    """Every credential a loaded Config holds: app secrets, push Tokens and AES keys, the
    SMS SecretId, SecretKey and callback token, console password hashes. A deferred one
    (None, in a config loaded with strict_secrets=False) is skipped."""
    found: list[str | None] = []
    for app in cfg.apps.values():
        found.append(_reveal(app.secret))
        if app.push is not None:
            found += [_reveal(app.push.token), _reveal(app.push.aes_key)]
    if cfg.sms is not None:
        found += [_reveal(cfg.sms.secret_id), _reveal(cfg.sms.secret_key),
                  _reveal(cfg.sms.callback_token)]
    for user in cfg.console.users.values():
        found.append(_reveal(user.password_hash))
    return [v for v in found if v]


def template_secrets(tset: TemplateSet) -> list[str]:
    """The secrets a set of templates holds (a webhook's signing secret)."""
    found: list[str] = []
    for tpl in tset.templates.values():
        for key, value in tpl.settings.items():
            text = _reveal(value)
            if text and ("secret" in key or "token" in key):
                found.append(text)
    return found


def redact(text: str) -> str:
    # each pattern needs a character most texts lack ('=', or ':' and a quote): the
    # test is far cheaper than a regex scan, and every result's history line comes here
    if "=" in text:
        text = _QUERY_RE.sub(lambda m: m.group(1) + MASK, text)
    if ":" in text and ('"' in text or "'" in text):
        text = _FIELD_RE.sub(lambda m: m.group(1) + m.group(2) + MASK + m.group(2), text)
    pattern = SECRETS.pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    msg = record.getMessage()
    clean = redact(msg)
    if clean != msg or record.args:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


def install_redaction() -> None:
    """Redact every record when it is made, whatever logger or handler it goes to.

    A handler filter alone would miss handlers that others attach (pytest's caplog, a
    library's own), and urllib3 and peewee log URLs and SQL parameters at DEBUG.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "_herald", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _redact_record(record)
        return record

    factory._herald = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One object a line: time, level, logger, message, and row/template/errcode when
    the call passed them in `extra`."""

    FIELDS = ("row_id", "template", "errcode", "app", "job")

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for f in self.FIELDS:
            if hasattr(record, f):
                out[f] = getattr(record, f)
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class _SkippedRunFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def setup_logging(fmt: str = "text", level: str = "INFO", stream=None, *,
                  sql: bool = False) -> logging.Handler:
    """Configure the root logger once (stderr by default: journald takes it).

    sql (log.sql): peewee's statements, whatever the level; otherwise peewee says only
    warnings, even at DEBUG (every claim and write would bury the lines that matter)."""
    install_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        # journald adds its own timestamp; keep ours for runs outside systemd.
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_herald", False):
            root.removeHandler(h)
    handler._herald = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs every URL (with the token) at DEBUG: keep it at WARNING.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(logging.DEBUG if sql else logging.WARNING)
    # A poll that comes while dispatch is still draining is skipped by design
    # (max_instances=1); APScheduler says so at WARNING every interval. Not news.
    sched = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _SkippedRunFilter) for f in sched.filters):
        sched.addFilter(_SkippedRunFilter())
    return handler
