"""Herald's configuration: one YAML file, validated at start-up into one immutable Config.

Why so strict: a daemon that sends messages to real users must not start on a
half-understood configuration. All problems are collected and reported together (fix
them in one edit, not one restart per typo), each naming the dotted key, the bad value
and what is allowed. Unknown keys are errors at every level, because a typo such as
`wokers: 64` would otherwise fall back to the default without anyone noticing.

String values may use ${VAR} and ${VAR:-default} (default when VAR is unset or empty,
as in the shell); write $${ for a literal ${. Secrets are wrapped in Secret, whose str()
and repr() never show the value, and error messages print <secret> instead of it.
"""

import difflib
import hmac
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

__all__ = [
    "AppConfig",
    "Backoff",
    "Config",
    "ConfigError",
    "DispatchConfig",
    "HttpConfig",
    "JobConfig",
    "LogConfig",
    "MetricsConfig",
    "QuotaReset",
    "Retention",
    "RetryConfig",
    "Secret",
    "UnknownAppError",
    "config_from_dict",
    "load_config",
    "parse_duration",
]


# --------------------------------------------------------------------------- public types


class Secret:
    """Wraps a secret string. str() and repr() give '<secret>' so it can never leak into
    logs or exception messages. .reveal() returns the value. Equality compares values.
    Hashable."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        # object.__setattr__ because our own __setattr__ refuses all writes.
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "<secret>"

    def __repr__(self) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant-time: comparing secrets must not leak how many leading bytes match.
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash(self._value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Secret is immutable")


class ConfigError(Exception):
    """Everything wrong with a configuration, one "<key>: <what is wrong>" line each."""

    problems: list[str]
    path: str | None

    def __init__(self, problems: str | Sequence[str], path: str | os.PathLike[str] | None = None
                 ) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = None if path is None else os.fspath(path)
        # Both go to Exception.args so the error survives pickling (multiprocessing).
        super().__init__(self.problems, self.path)

    def __str__(self) -> str:
        where = f" in {self.path}" if self.path else ""
        return f"invalid configuration{where}:\n  - " + "\n  - ".join(self.problems)


class UnknownAppError(KeyError):
    """Raised by Config.app(); a KeyError whose str() is the plain message.

    (KeyError's own str() wraps the message in quotes, which reads badly in logs.)
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    appid: str
    secret: Secret | None
    token_source: str  # stable | legacy | external
    token_file: Path | None  # external only; None = the shared access_token table row


@dataclass(frozen=True, slots=True)
class JobConfig:
    every: float  # seconds


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    batch_size: int
    workers: int
    lease: float  # seconds
    on_stale: str  # retry | fail
    rate_limit: float | None  # messages per second per app; None = unlimited


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float  # seconds
    factor: float
    max: float  # seconds
    jitter: float  # 0..1


@dataclass(frozen=True, slots=True)
class QuotaReset:
    """When WeChat's daily quota resets: a wall-clock time at a fixed UTC offset."""

    hour: int
    minute: int
    utc_offset_minutes: int

    def next_after(self, dt: datetime) -> datetime:
        """The first reset instant strictly after the aware datetime `dt`, as aware UTC."""
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise ValueError("QuotaReset.next_after needs an aware datetime")
        # A fixed offset has no DST, so "the same time tomorrow" is exactly 24 hours on.
        zone = timezone(timedelta(minutes=self.utc_offset_minutes))
        local = dt.astimezone(zone)
        reset = local.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if reset <= local:
            reset += timedelta(days=1)
        return reset.astimezone(UTC)

    def __str__(self) -> str:
        sign = "-" if self.utc_offset_minutes < 0 else "+"
        hours, minutes = divmod(abs(self.utc_offset_minutes), 60)
        return f"{self.hour:02d}:{self.minute:02d}{sign}{hours:02d}:{minutes:02d}"


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int
    backoff: Backoff
    daily_quota_reset: QuotaReset


@dataclass(frozen=True, slots=True)
class HttpConfig:
    timeout: float  # seconds


@dataclass(frozen=True, slots=True)
class Retention:
    success: float  # seconds
    fail: float
    cancelled: float


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None  # as written, e.g. "127.0.0.1:9464"; None = metrics disabled
    host: str | None  # without IPv6 brackets
    port: int | None


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str  # text | json
    level: str  # DEBUG | INFO | WARNING | ERROR


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    database: str
    api_base: str
    templates: Path
    apps: Mapping[str, AppConfig]  # MappingProxyType, in file order
    jobs: Mapping[str, JobConfig]  # MappingProxyType with all four job names
    dispatch: DispatchConfig
    retry: RetryConfig
    http: HttpConfig
    retention: Retention
    metrics: MetricsConfig
    log: LogConfig

    def app(self, name: str | None) -> AppConfig:
        """The app called `name`; rows whose app is NULL (None) use the app 'default'."""
        wanted = "default" if name is None else name
        try:
            return self.apps[wanted]
        except KeyError:
            configured = ", ".join(sorted(self.apps))
            raise UnknownAppError(f"unknown app {wanted!r} (configured: {configured})") from None

    def __repr__(self) -> str:
        # Hand-written (dataclass keeps it) only to hide a password in the database URL;
        # secrets already print as <secret>.
        parts = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "database":
                value = _mask_url(value)
            parts.append(f"{field.name}={value!r}")
        return f"Config({', '.join(parts)})"


# --------------------------------------------------------------------------- schema

DEFAULT_DATABASE: Final = "sqlite:///herald.db"
DEFAULT_API_BASE: Final = "https://api.weixin.qq.com"
DEFAULT_TEMPLATES: Final = "templates.yaml"
DEFAULT_LISTEN: Final = "127.0.0.1:9464"

_TOP_KEYS: Final = ("database", "api_base", "templates", "apps", "jobs", "dispatch", "retry",
                    "http", "retention", "metrics", "log")
_APP_KEYS: Final = ("appid", "secret", "secret_file", "token_source", "token_file")
_TOKEN_SOURCES: Final = ("stable", "legacy", "external")
_JOB_DEFAULTS: Final = {"dispatch": 60.0, "token_refresh": 300.0, "stale_retry": 60.0,
                        "purge": 3600.0}
_DISPATCH_KEYS: Final = ("batch_size", "workers", "lease", "on_stale", "rate_limit")
_ON_STALE: Final = ("retry", "fail")
_RETRY_KEYS: Final = ("max_attempts", "backoff", "daily_quota_reset")
_BACKOFF_KEYS: Final = ("base", "factor", "max", "jitter")
_RETENTION_DEFAULTS: Final = {"success": 30 * 86400.0, "fail": 90 * 86400.0,
                              "cancelled": 30 * 86400.0}
_LOG_FORMATS: Final = ("text", "json")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_DB_SCHEMES: Final = ("sqlite", "postgres", "postgresql", "mysql")
_DB_ALLOWED: Final = "allowed schemes: sqlite, postgres, postgresql, mysql, each optionally +pool"

_APP_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_APPID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Units are lower case only: "5M" could as well mean months as minutes.
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER: Final = re.compile(r"[+-]?\d+")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NOT_A_DURATION: Final = "is not a duration (use 90s, 5m, 1h, 30d or a number of seconds)"
_QUOTA_RESET: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)([+-])(\d\d):([0-5]\d)")
_LISTEN: Final = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<port6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
# ${NAME} or ${NAME:-default}; $${ is an escaped literal "${"; a lone "${" is unterminated.
_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_REFERENCE_BODY: Final = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?",
                                    re.DOTALL)


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


_MISSING: Final = _Sentinel("<missing>")  # key absent
_BAD: Final = _Sentinel("<bad>")  # value unusable, problem already reported


class _EnvStr(str):
    """A string that came out of ${...} interpolation.

    Environment variables are always strings, so numeric settings accept these when
    they spell a number (`workers: ${HERALD_WORKERS:-16}`) while a quoted "16" typed in
    the file itself is still a type error.
    """

    __slots__ = ()


# --------------------------------------------------------------------------- helpers


def _join(prefix: str, name: object) -> str:
    text = name if isinstance(name, str) else repr(name)
    return f"{prefix}.{text}" if prefix else text


def _is_secret_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "secret"


def _mask_url(text: str) -> str:
    """The URL with any password replaced by ***, for messages and repr()."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)", text)
    if match is None or "@" not in match.group(2):
        return text
    userinfo, host = match.group(2).rsplit("@", 1)
    if ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{host}{text[match.end():]}"


def _show(key: str, value: object) -> str:
    """How a bad value appears in a message: never a secret, never a whole structure."""
    if _is_secret_key(key) or isinstance(value, Secret):
        return "<secret>"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    # Containers are described, not printed: a misplaced mapping could hold a secret.
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    if isinstance(value, str):
        text = str(value)
        if key.split(" ", 1)[0] == "database":
            text = _mask_url(text)
        shown = repr(text)
    else:
        shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _did_you_mean(name: object, allowed: Sequence[str]) -> str:
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""


def _parse_duration(value: object) -> float:
    """Seconds for a duration value; ValueError with the reason (no key) otherwise."""
    if isinstance(value, bool):
        raise ValueError(_NOT_A_DURATION)
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            text = value.strip()
            match = _DURATION.fullmatch(text)
            if match is not None:
                seconds = float(match.group(1)) * _UNITS[match.group(2)]
            elif _NUMBER.fullmatch(text):
                seconds = float(text)
            else:
                raise ValueError(_NOT_A_DURATION)
        else:
            raise ValueError(_NOT_A_DURATION)
    except OverflowError:
        raise ValueError(_NOT_A_DURATION) from None
    if not math.isfinite(seconds):
        raise ValueError(_NOT_A_DURATION)
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


def parse_duration(value: object, key: str) -> float:
    """Seconds for `90s`, `5m`, `1h`, `30d` or a plain number of seconds (> 0).

    Raises ConfigError with one problem naming `key` otherwise.
    """
    try:
        return _parse_duration(value)
    except ValueError as error:
        raise ConfigError([f"{key}: {_show(key, value)} {error}"]) from None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, _EnvStr) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, _EnvStr) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _normalize_database(url: str, base_dir: Path) -> str:
    """The database URL, a relative SQLite path made absolute; ValueError with the reason."""
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", url.strip(), re.DOTALL)
    if match is None:
        raise ValueError(f"is not a database URL (e.g. sqlite:///herald.db; {_DB_ALLOWED})")
    scheme, rest = match.group(1).lower(), match.group(2)
    engine, plus, variant = scheme.partition("+")
    if engine not in _DB_SCHEMES or (plus and variant != "pool"):
        raise ValueError(f"has an unsupported scheme {scheme!r} ({_DB_ALLOWED})")
    if engine == "sqlite":
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
        raise ValueError(f"names no database (e.g. {engine}://user@host/herald)")
    return url.strip()


def _parse_quota_reset(value: object) -> QuotaReset | None:
    if not isinstance(value, str):
        return None
    match = _QUOTA_RESET.fullmatch(value.strip())
    if match is None:
        return None
    hour, minute, sign, off_hours, off_minutes = match.groups()
    offset = int(off_hours) * 60 + int(off_minutes)
    if offset > 14 * 60:  # real UTC offsets span -12:00..+14:00
        return None
    return QuotaReset(int(hour), int(minute), -offset if sign == "-" else offset)


def _parse_listen(value: object) -> tuple[str, int] | None:
    if not isinstance(value, str):
        return None
    match = _LISTEN.fullmatch(value.strip())
    if match is None:
        return None
    if match.group("v6") is not None:
        host, port_text = match.group("v6"), match.group("port6")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, port_text = match.group("host"), match.group("port")
        if not _HOSTNAME.fullmatch(host):
            return None
        if re.fullmatch(r"[\d.]+", host):  # looks like IPv4, so it must be one
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return None
    port = int(port_text)
    return (host, port) if 0 <= port <= 65535 else None


# --------------------------------------------------------------------------- validator


class _Checker:
    """Walks the raw data once, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.bad_keys: set[str] = set()
        self.apps_from_env = False

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")
        self.bad_keys.add(key)

    # ---- raw access

    def interpolate(self, value: object, key: str) -> object:
        """`value` with ${VAR} / ${VAR:-default} expanded; _BAD if a reference failed."""
        if not isinstance(value, str) or "${" not in value:
            return value
        failed = False
        substituted = False
        secret = _is_secret_key(key)

        def expand(match: re.Match[str]) -> str:
            nonlocal failed, substituted
            if match.group(0) == "$${":
                return "${"
            body = match.group("body")
            if body is None:
                self.add(key, "unterminated ${ (write ${NAME} or ${NAME:-default}; "
                              "$${ for a literal ${)")
                failed = True
                return ""
            reference = _REFERENCE_BODY.fullmatch(body)
            if reference is None or "${" in (reference.group("default") or ""):
                # The text of a reference under `secret` may hold the secret as default.
                shown = "" if secret else " " + repr("${" + body + "}")
                self.add(key, f"malformed reference{shown} (write ${{NAME}} or "
                              "${NAME:-default}, NAME made of letters, digits and _; "
                              "nesting is not supported)")
                failed = True
                return ""
            substituted = True
            name, default = reference.group("name"), reference.group("default")
            current = self.env.get(name)
            if default is not None:
                return current if current else default
            if current is None:
                if self.apps_from_env and key.startswith("apps.default."):
                    hint = (" (there is no apps section, so the app 'default' takes its "
                            "appid and secret from WECHAT_APPID and WECHAT_SECRET)")
                else:
                    hint = f" (set it, or write ${{{name}:-default}})"
                self.add(key, f"environment variable {name} is not set{hint}")
                failed = True
                return ""
            return current

        result = _REFERENCE.sub(expand, value)
        if failed:
            return _BAD
        return _EnvStr(result) if substituted else result

    def take(self, section: Mapping[str, Any], prefix: str, name: str) -> object:
        """section[name] interpolated; _MISSING if absent, _BAD if interpolation failed."""
        if name not in section:
            return _MISSING
        return self.interpolate(section[name], _join(prefix, name))

    def section(self, value: object, key: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        """A settings mapping whose keys are all in `allowed`; absent or null means {}."""
        if value is _MISSING or value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(key or "(top level)",
                     f"{_show(key, value)} is not a mapping (allowed keys: {', '.join(allowed)})")
            return {}
        for name in value:
            if name not in allowed:
                self.add(_join(key, name), f"unknown key{_did_you_mean(name, allowed)} "
                                           f"(allowed: {', '.join(allowed)})")
        return value

    # ---- typed fields; each returns the default after reporting a problem

    def duration(self, section: Mapping[str, Any], prefix: str, name: str, default: float,
                 minimum: float | None = None, minimum_text: str = "") -> float:
        key = _join(prefix, name)
        value = self.take(section, prefix, name)
        if value is _MISSING or value is _BAD:
            return default
        try:
            seconds = _parse_duration(value)
        except ValueError as error:
            self.add(key, f"{_show(key, value)} {error}")
            return default
        if minimum is not None and seconds < minimum:
            self.add(key, f"{_show(key, value)} is too short (must be at least {minimum_text})")
            return default
        return seconds

    def integer(self, section: Mapping[str, Any], prefix: str, name: str, default: int,
                low: int, high: int) -> int:
        key = _join(prefix, name)
        value = self.take(section, prefix, name)
        if value is _MISSING or value is _BAD:
            return default
        number = _as_int(value)
        if number is None or not low <= number <= high:
            self.add(key, f"{_show(key, value)} is not allowed (an integer from {low} to {high})")
            return default
        return number

    def number(self, section: Mapping[str, Any], prefix: str, name: str, default: float | None,
               ok: Callable[[float], bool], expected: str, nullable: bool = False
               ) -> float | None:
        key = _join(prefix, name)
        value = self.take(section, prefix, name)
        if value is _MISSING or value is _BAD:
            return default
        if value is None and nullable:
            return None
        number = _as_number(value)
        if number is None or not ok(number):
            self.add(key, f"{_show(key, value)} is not allowed ({expected})")
            return default
        return number

    def choice(self, section: Mapping[str, Any], prefix: str, name: str, default: str,
               allowed: Sequence[str], upper: bool = False) -> str:
        key = _join(prefix, name)
        value = self.take(section, prefix, name)
        if value is _MISSING or value is _BAD:
            return default
        if isinstance(value, str):
            text = str(value).strip()
            text = text.upper() if upper else text
            if text in allowed:
                return text
        extra = ", case-insensitive" if upper else ""
        self.add(key, f"{_show(key, value)} is not allowed (allowed: {', '.join(allowed)}{extra})")
        return default

    def path(self, value: object, key: str) -> Path | None:
        """A file path (str or PathLike) resolved against the config folder."""
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            self.add(key, f"{_show(key, value)} is not a file path")
            return None
        return (self.base_dir / str(value).strip()).resolve()

    # ---- sections

    def database(self, top: Mapping[str, Any]) -> str:
        override = self.env.get("HERALD_DATABASE")
        value: object
        if override:
            # The file's own value is not even checked: the override exists for
            # environments where it does not apply.
            key, value = "database (from HERALD_DATABASE)", override
        else:
            key, value = "database", self.take(top, "", "database")
            if value is _MISSING:
                value = DEFAULT_DATABASE
            if value is _BAD:
                return ""
        if not isinstance(value, str):
            self.add(key, f"{_show(key, value)} is not a database URL (e.g. sqlite:///herald.db)")
            return ""
        try:
            return _normalize_database(str(value), self.base_dir)
        except ValueError as error:
            self.add(key, f"{_show(key, value)} {error}")
            return ""

    def api_base(self, top: Mapping[str, Any]) -> str:
        value = self.take(top, "", "api_base")
        if value is _MISSING:
            return DEFAULT_API_BASE
        if value is _BAD:
            return ""
        if isinstance(value, str):
            text = str(value).strip()
            parts = urlsplit(text)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            if (parts.scheme in ("http", "https") and parts.hostname and port_ok
                    and not parts.query and not parts.fragment and " " not in text):
                # Callers append "/cgi-bin/...", so a trailing slash would double up.
                return text.rstrip("/")
        self.add("api_base", f"{_show('api_base', value)} is not allowed (an http or https URL "
                             "without query, e.g. https://api.weixin.qq.com)")
        return ""

    def templates(self, top: Mapping[str, Any]) -> Path:
        value = self.take(top, "", "templates")
        if value is _MISSING:
            value = DEFAULT_TEMPLATES
        if value is _BAD:
            return self.base_dir
        return self.path(value, "templates") or self.base_dir

    def apps(self, top: Mapping[str, Any]) -> dict[str, AppConfig]:
        raw = top.get("apps", _MISSING)
        if raw is _MISSING or raw is None:
            self.apps_from_env = True
            raw = {"default": {"appid": "${WECHAT_APPID}", "secret": "${WECHAT_SECRET}"}}
        if not isinstance(raw, Mapping):
            self.add("apps", f"{_show('apps', raw)} is not a mapping of app name to settings")
            return {}
        if not raw:
            self.add("apps", "no apps configured (give at least one, e.g. "
                             "apps: {default: {appid: ..., secret: ...}})")
            return {}
        result: dict[str, AppConfig] = {}
        for name, settings in raw.items():
            key = _join("apps", name)
            if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
                self.add(key, f"{name!r} is not a valid app name (allowed: a lowercase letter, "
                              "then up to 31 lowercase letters, digits or _)")
                continue
            app = self.app(name, settings)
            if app is not None:
                result[name] = app
        return result

    def app(self, name: str, settings: object) -> AppConfig | None:
        prefix = f"apps.{name}"
        section = self.section(settings, prefix, _APP_KEYS)
        appid = self.appid(section, prefix)
        token_source = self.choice(section, prefix, "token_source", "stable", _TOKEN_SOURCES)
        known_source = None if f"{prefix}.token_source" in self.bad_keys else token_source
        secret = self.secret(section, prefix, known_source)
        token_file = self.token_file(section, prefix, known_source)
        if appid is None:
            return None
        return AppConfig(name=name, appid=appid, secret=secret, token_source=token_source,
                         token_file=token_file)

    def appid(self, section: Mapping[str, Any], prefix: str) -> str | None:
        key = f"{prefix}.appid"
        value = self.take(section, prefix, "appid")
        if value is _BAD:
            return None
        if value is _MISSING or value is None:
            self.add(key, "missing (required: the Mini Program's appid, e.g. wx0123456789abcdef)")
            return None
        if not isinstance(value, str):
            self.add(key, f"{_show(key, value)} is not a string (quote it in YAML)")
            return None
        if not _APPID.fullmatch(value):
            self.add(key, f"{_show(key, value)} is not a valid appid "
                          "(allowed: 1 to 64 letters, digits, _ or -)")
            return None
        return str(value)

    def secret(self, section: Mapping[str, Any], prefix: str, token_source: str | None
               ) -> Secret | None:
        inline = self.take(section, prefix, "secret")
        file = self.take(section, prefix, "secret_file")
        has_inline = inline is not _MISSING and inline is not None
        has_file = file is not _MISSING and file is not None
        if has_inline and has_file:
            self.add(f"{prefix}.secret_file", f"cannot be combined with {prefix}.secret "
                                              "(give exactly one of secret and secret_file)")
            return None
        if inline is _BAD or file is _BAD:
            return None
        if has_inline:
            return self.inline_secret(inline, f"{prefix}.secret")
        if has_file:
            return self.secret_from_file(file, f"{prefix}.secret_file")
        if token_source in ("stable", "legacy"):
            self.add(f"{prefix}.secret", f"missing (required for token_source {token_source!r}; "
                                         "give secret or secret_file)")
        return None

    def inline_secret(self, value: object, key: str) -> Secret | None:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            self.add(key, "<secret> is not a string (quote it in YAML)")
            return None
        if not value.strip():
            self.add(key, "empty value (give the app secret, or use secret_file)")
            return None
        return Secret(str(value))

    def secret_from_file(self, value: object, key: str) -> Secret | None:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            self.add(key, f"{_show(key, value)} is not a file path")
            return None
        relative = Path(str(value).strip())
        looked: list[Path] = []
        target = relative
        if not relative.is_absolute():
            # systemd's LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY; a file
            # there wins, otherwise the path is relative to the config file as usual.
            credentials = self.env.get("CREDENTIALS_DIRECTORY")
            target = self.base_dir / relative
            if credentials:
                candidate = Path(credentials) / relative
                if candidate.is_file():
                    target = candidate
                else:
                    looked.append(candidate)
        looked.append(target)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            where = " and ".join(str(path) for path in looked)
            self.add(key, f"{_show(key, value)} not found (looked for {where})")
            return None
        except OSError as error:
            self.add(key, f"{_show(key, value)} cannot be read ({target}: {error.strerror})")
            return None
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            # Not the decoder's message: it quotes the offending byte of the secret.
            self.add(key, f"{_show(key, value)} is not UTF-8 text ({target})")
            return None
        if not text:
            self.add(key, f"{_show(key, value)} is empty ({target})")
            return None
        return Secret(text)

    def token_file(self, section: Mapping[str, Any], prefix: str, token_source: str | None
                   ) -> Path | None:
        key = f"{prefix}.token_file"
        value = self.take(section, prefix, "token_file")
        if value is _MISSING or value is None or value is _BAD:
            return None
        if token_source is not None and token_source != "external":
            self.add(key, f"{_show(key, value)} is not allowed with token_source "
                          f"{token_source!r} (token_file is only for token_source external)")
            return None
        return self.path(value, key)

    def jobs(self, top: Mapping[str, Any]) -> dict[str, JobConfig]:
        names = tuple(_JOB_DEFAULTS)
        section = self.section(top.get("jobs", _MISSING), "jobs", names)
        result: dict[str, JobConfig] = {}
        for name, default in _JOB_DEFAULTS.items():
            prefix = f"jobs.{name}"
            job = self.section(section.get(name, _MISSING), prefix, ("every",))
            result[name] = JobConfig(every=self.duration(job, prefix, "every", default))
        return result

    def dispatch(self, top: Mapping[str, Any]) -> DispatchConfig:
        p = "dispatch"
        s = self.section(top.get(p, _MISSING), p, _DISPATCH_KEYS)
        return DispatchConfig(
            batch_size=self.integer(s, p, "batch_size", 100, 1, 10000),
            workers=self.integer(s, p, "workers", 16, 1, 256),
            # Shorter leases would expire while a batch is still being sent.
            lease=self.duration(s, p, "lease", 300.0, minimum=10.0, minimum_text="10s"),
            on_stale=self.choice(s, p, "on_stale", "retry", _ON_STALE),
            rate_limit=self.number(s, p, "rate_limit", None, lambda n: n > 0,
                                   "null or a number > 0, messages per second per app",
                                   nullable=True),
        )

    def retry(self, top: Mapping[str, Any]) -> RetryConfig:
        p = "retry"
        s = self.section(top.get(p, _MISSING), p, _RETRY_KEYS)
        max_attempts = self.integer(s, p, "max_attempts", 5, 1, 100)
        bp = "retry.backoff"
        b = self.section(s.get("backoff", _MISSING), bp, _BACKOFF_KEYS)
        base = self.duration(b, bp, "base", 30.0)
        factor = self.number(b, bp, "factor", 2.0, lambda n: n >= 1, "a number >= 1")
        maximum = self.duration(b, bp, "max", 3600.0)
        jitter = self.number(b, bp, "jitter", 0.2, lambda n: 0 <= n <= 1, "a number from 0 to 1")
        if maximum < base and not {f"{bp}.base", f"{bp}.max"} & self.bad_keys:
            shown_max = _show("", b["max"]) if "max" in b else "the default 1h"
            shown_base = _show("", b["base"]) if "base" in b else "the default 30s"
            self.add(f"{bp}.max", f"{shown_max} is shorter than {bp}.base {shown_base} "
                                  "(max must be >= base)")
        reset = self.quota_reset(s, p)
        return RetryConfig(
            max_attempts=max_attempts,
            backoff=Backoff(base=base, factor=factor if factor is not None else 2.0,
                            max=maximum, jitter=jitter if jitter is not None else 0.2),
            daily_quota_reset=reset,
        )

    def quota_reset(self, section: Mapping[str, Any], prefix: str) -> QuotaReset:
        default = QuotaReset(0, 0, 8 * 60)  # WeChat's quota day starts at midnight Beijing
        key = f"{prefix}.daily_quota_reset"
        value = self.take(section, prefix, "daily_quota_reset")
        if value is _MISSING or value is _BAD:
            return default
        parsed = _parse_quota_reset(value)
        if parsed is None:
            hint = "" if isinstance(value, str) else "; quote it in YAML"
            self.add(key, f"{_show(key, value)} is not allowed (HH:MM followed by a UTC offset "
                          f"±HH:MM up to 14:00, e.g. \"00:00+08:00\"{hint})")
            return default
        return parsed

    def http(self, top: Mapping[str, Any]) -> HttpConfig:
        s = self.section(top.get("http", _MISSING), "http", ("timeout",))
        return HttpConfig(timeout=self.duration(s, "http", "timeout", 10.0))

    def retention(self, top: Mapping[str, Any]) -> Retention:
        p = "retention"
        s = self.section(top.get(p, _MISSING), p, tuple(_RETENTION_DEFAULTS))
        days = {name: self.duration(s, p, name, default)
                for name, default in _RETENTION_DEFAULTS.items()}
        return Retention(**days)

    def metrics(self, top: Mapping[str, Any]) -> MetricsConfig:
        s = self.section(top.get("metrics", _MISSING), "metrics", ("listen",))
        key = "metrics.listen"
        value = self.take(s, "metrics", "listen")
        if value is _MISSING:
            value = DEFAULT_LISTEN
        if value is None or value is _BAD:
            return MetricsConfig(listen=None, host=None, port=None)
        parsed = _parse_listen(value)
        if parsed is None:
            self.add(key, f"{_show(key, value)} is not allowed (host:port with port 0..65535, "
                          "e.g. 127.0.0.1:9464 or [::1]:9464; null disables metrics)")
            return MetricsConfig(listen=None, host=None, port=None)
        return MetricsConfig(listen=str(value).strip(), host=parsed[0], port=parsed[1])

    def log(self, top: Mapping[str, Any]) -> LogConfig:
        s = self.section(top.get("log", _MISSING), "log", ("format", "level"))
        return LogConfig(
            format=self.choice(s, "log", "format", "text", _LOG_FORMATS),
            level=self.choice(s, "log", "level", "INFO", _LOG_LEVELS, upper=True),
        )


# --------------------------------------------------------------------------- entry points


def config_from_dict(data: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str],
                     path: Path | None = None) -> Config:
    """Validate already-parsed settings into a Config; ConfigError lists every problem.

    Relative paths (sqlite file, templates, secret_file, token_file) resolve against
    `base_dir`, normally the config file's folder.
    """
    base = Path(base_dir).resolve()
    checker = _Checker(env, base)
    if not isinstance(data, Mapping):
        raise ConfigError([f"(top level): {_show('', data)} is not a mapping of settings "
                           f"(allowed keys: {', '.join(_TOP_KEYS)})"], path)
    top = checker.section(data, "", _TOP_KEYS)
    database = checker.database(top)
    api_base = checker.api_base(top)
    templates = checker.templates(top)
    apps = checker.apps(top)
    jobs = checker.jobs(top)
    dispatch = checker.dispatch(top)
    retry = checker.retry(top)
    http = checker.http(top)
    retention = checker.retention(top)
    metrics = checker.metrics(top)
    log = checker.log(top)
    if checker.problems:
        raise ConfigError(checker.problems, path)
    return Config(
        path=path,
        database=database,
        api_base=api_base,
        templates=templates,
        apps=MappingProxyType(apps),
        jobs=MappingProxyType(jobs),
        dispatch=dispatch,
        retry=retry,
        http=http,
        retention=retention,
        metrics=metrics,
        log=log,
    )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML otherwise lets the last one win
    (the same silent-typo hazard as an unknown key)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            # `<<` merges are meant to be overridden; only keys written out count.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node,
                                                                           yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable; SafeLoader reports it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file.

    `path` None means $HERALD_CONFIG, else config.yaml in the current directory; `env`
    defaults to os.environ and feeds ${VAR}, HERALD_DATABASE and CREDENTIALS_DIRECTORY.
    """
    environment: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environment.get("HERALD_CONFIG") or "config.yaml"
    file = Path(path).resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {file} not found"], file) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config file {file} is not UTF-8 text"], file) from None
    except OSError as error:
        raise ConfigError([f"config file {file} cannot be read: {error.strerror}"], file) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no object tags
    except yaml.MarkedYAMLError as error:
        # Only line, column and problem: PyYAML's full message quotes the offending line,
        # which may hold a secret. `from None` keeps that text out of tracebacks too.
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError([f"{where}: YAML syntax error: {error.problem or error.context}"],
                          file) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"YAML error: {type(error).__name__}"], file) from None
    return config_from_dict({} if data is None else data, base_dir=file.parent, env=environment,
                            path=file)
