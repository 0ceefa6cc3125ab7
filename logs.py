"""Logging for journald: text for people or one JSON object a line, never a secret.

Every record is redacted when it is made (a LogRecord factory, so whatever handler
gets it): access tokens travel in the URL query string (urllib3 and requests print
URLs in their own messages), and app secrets sit in token requests. Known secret
values are registered with add_secret(); beyond those, only values in a credential's
own shape are masked: a query-string or form field (`access_token=...`, `secret=...`,
`client_secret=...`) and a quoted JSON or Python-dict field (`"secret": "..."`).
Ordinary words stay: "apps.default.secret: environment variable X is not set" and
"invalid app secret: check appsecret" read as written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime

# A field whose name ends in access_token or secret (client_secret, appsecret, ...)
_NAME = r"[A-Za-z0-9_]*(?:access_token|secret)"
# name=value, as in a URL's query string or a form body: no space around '='
# (a value starting with '<' is a placeholder such as <redacted> or <token of app x>)
_QUERY_RE = re.compile(rf"(?i)(?<![A-Za-z0-9_])({_NAME}=)([^<&\s\"'#,;)}}\]][^&\s\"'#,;)}}\]]*)")
# "name": "value" or 'name': 'value' (JSON, a Python dict's repr)
_FIELD_RE = re.compile(rf"""(?i)(["']{_NAME}["']\s*:\s*)(["'])((?:(?!\2)[^\\]|\\.)*)\2""")
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
MASK = "<redacted>"


def add_secret(value: str | None) -> None:
    """Mask this exact value wherever it would appear in a log line or error text."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    text = _QUERY_RE.sub(lambda m: m.group(1) + MASK, text)
    text = _FIELD_RE.sub(lambda m: m.group(1) + m.group(2) + MASK + m.group(2), text)
    for s in list(_secrets):
        if s in text:
            text = text.replace(s, MASK)
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


def _install_record_factory() -> None:
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


_install_record_factory()


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
