"""What a loaded configuration is: Secret, the two errors, and the frozen dataclasses.

Attribute names are what the rest of Herald reads (cfg.dispatch.lease, cfg.app(name)...);
the schema in schema.py declares one key for each field and builds these from it.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType


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


def mask_url(text: str) -> str:
    """The URL with any password replaced by ***, for messages and repr()."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)", text)
    if match is None or "@" not in match.group(2):
        return text
    userinfo, host = match.group(2).rsplit("@", 1)
    if ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{host}{text[match.end():]}"


# In a Config loaded with strict_secrets=False, a credential whose problem was deferred
# (listed in Config.unresolved) is None even where the annotation says Secret or str:
# such configs serve verbs that never use credentials, and Config.require() guards the
# others. The annotations stay what every credential-using caller can rely on.


@dataclass(frozen=True, slots=True)
class PushConfig:
    """WeChat message push (消息推送) for one app, as set in its console."""

    token: Secret
    aes_key: Secret | None  # EncodingAESKey; None = plaintext mode only


# Defaults on fields added after the first release keep AppConfig(...) calls written for
# the five-field version working; tests/test_config.py checks they match the schema's.
@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    appid: str
    secret: Secret | None
    token_source: str  # stable | legacy | external
    token_file: Path | None  # external only; None = the shared access_token table row
    kind: str = "miniprogram"  # miniprogram | official_account
    push: PushConfig | None = None


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
    """Seconds each kind of finished row is kept; None = forever."""

    success: float | None
    fail: float | None
    cancelled: float | None
    events: float | None = 30 * 86400.0  # push_event inbox rows


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None  # as written, e.g. "127.0.0.1:9464"; None = metrics disabled
    host: str | None  # without IPv6 brackets
    port: int | None


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str  # text | json
    level: str  # DEBUG | INFO | WARNING | ERROR
    sql: bool = False  # peewee's SQL statements logged


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Where `serve` listens for WeChat pushes and SMS status callbacks."""

    listen: str | None  # None = disabled
    host: str | None
    port: int | None
    push_max_age: float = 300.0  # seconds a POST push's timestamp may be off from now


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    name: str
    password_hash: Secret  # "scrypt$..."; a verifier, still kept out of logs
    role: str  # viewer | operator


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    listen: str | None  # None = disabled
    host: str | None
    port: int | None
    users: Mapping[str, ConsoleUser]  # MappingProxyType, in file order
    session_ttl: float  # seconds
    cookie_secure: bool


@dataclass(frozen=True, slots=True)
class GrantsConfig:
    on_missing: str  # send | hold | fail


@dataclass(frozen=True, slots=True)
class ReceiptsConfig:
    missing_after: float  # seconds


@dataclass(frozen=True, slots=True)
class SmsConfig:
    """Tencent Cloud SMS (API 3.0)."""

    secret_id: Secret
    secret_key: Secret
    sdk_app_id: str  # digits, e.g. "1400006666"
    sign_name: str
    region: str
    endpoint: str  # without trailing slash
    callback_token: Secret | None  # last path segment of the status callback URL


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    database: str
    api_base: str
    templates: Path
    apps: Mapping[str, AppConfig]  # MappingProxyType, in file order
    jobs: Mapping[str, JobConfig]  # MappingProxyType with every job name
    dispatch: DispatchConfig
    retry: RetryConfig
    http: HttpConfig
    retention: Retention
    metrics: MetricsConfig
    log: LogConfig
    web: WebConfig
    console: ConsoleConfig
    grants: GrantsConfig
    receipts: ReceiptsConfig
    sms: SmsConfig | None
    # Sound but risky settings (a port open to other hosts...): for `check` and start-up
    # logs to show; they never stop Herald.
    warnings: tuple[str, ...] = ()
    # strict_secrets=False only: dotted key -> the problem that would have been an error.
    unresolved: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def app(self, name: str | None) -> AppConfig:
        """The app called `name`; rows whose app is NULL (None) use the app 'default'."""
        wanted = "default" if name is None else name
        try:
            return self.apps[wanted]
        except KeyError:
            configured = ", ".join(sorted(self.apps))
            raise UnknownAppError(f"unknown app {wanted!r} (configured: {configured})") from None

    def require(self, *prefixes: str) -> None:
        """Raise ConfigError listing the unresolved problems whose keys start with any of
        `prefixes` (all of them when none is given), e.g. require("apps.") before sending.
        A config loaded with strict_secrets=True has none."""
        wanted = [problem for key, problem in self.unresolved.items()
                  if not prefixes or key.startswith(prefixes)]
        if wanted:
            raise ConfigError(wanted, self.path)

    def __repr__(self) -> str:
        # Hand-written (dataclass keeps it) only to hide a password in the database URL;
        # secrets already print as <secret>.
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "database":
                value = mask_url(value)
            parts.append(f"{item.name}={value!r}")
        return f"Config({', '.join(parts)})"
