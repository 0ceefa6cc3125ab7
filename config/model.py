"""Every key of config.yaml, declared once: a field of the frozen dataclass it loads into.

A field's type is what Herald reads (cfg.dispatch.lease is a float); its Annotated
metadata declares the key: the check (its limits), the default as written in YAML, the
help, and what SIGHUP does with a change in `run` and in `serve` (spec.Sighup; a key
says it or takes its section's). Fields without such metadata are not keys (an entry's
name, a listener's host and port, where the file was). schema.py reads these classes;
validation, defaults, unknown keys and did-you-mean, reload's tables, config.yaml and
docs/configuration.md all come from them (`python -m config.generate` writes the last
two; tests hold them equal).

Adding a key: one field here, then `python -m config.generate`.

    key(check, default, help)        a value; default as written in YAML, or REQUIRED
    secret(check, default, help)     a credential: never shown, deferrable
    section(help)                    on a field typed with another of these classes
    names(help, pattern, ...)        on a Mapping[str, <class>]: names the user picks
    jobs(help, every, *Job(...))     the scheduled jobs, each with its own default
"""

# No `from __future__ import annotations`: the Annotated metadata is built when the class
# is, so schema.py reads it without evaluating strings.

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Final

from .errors import ConfigError, UnknownAppError
from .secret import Secret, mask_url
from .spec import (
    BOTH_LIVE,
    REQUIRED,
    RESTART,
    RUN_LIVE,
    SERVE_RESTART,
    Defer,
    Job,
    Sighup,
    jobs,
    key,
    names,
    secret,
    section,
)
from .values import (
    AesKey,
    Bool,
    DatabaseUrl,
    Digits,
    Duration,
    FilePath,
    HttpUrl,
    Integer,
    Listen,
    Number,
    Pattern,
    QuotaReset,
    QuotaResetTime,
    SecretText,
    one_of,
    parse_address,
)
from .zone import TimeZone

DATABASE_ENV: Final = "HERALD_DATABASE"
# Limits no real operator meets; they exist to catch typos (1e12, a lost unit) at start-up.
DAY: Final = 86400.0
JOB_EVERY: Final = Duration(low=0.1, high=DAY)
BACKOFF: Final = Duration(high=7 * DAY)
RETENTION: Final = Duration(high=36500 * DAY, forever=True)  # 100 years
PUSH_TOKEN: Final = Pattern(re.compile(r"[A-Za-z0-9]{3,32}"), "push Token",
                            "3 to 32 letters or digits, as set in the console")


def _spread_listen(settings: object, listen: str | None) -> None:
    """host (without IPv6 brackets) and port from `listen`, which Listen has checked."""
    address = parse_address(listen) if listen is not None else None
    object.__setattr__(settings, "host", address.host if address else None)
    object.__setattr__(settings, "port", address.port if address else None)


# In a Config loaded with strict_secrets=False, a credential whose problem was deferred
# (listed in Config.unresolved) is None even where the annotation says Secret or str:
# such configs serve verbs that never use credentials, and Config.require() guards the
# others. The annotations stay what every credential-using caller can rely on.


@dataclass(frozen=True, slots=True)
class PushConfig:
    """WeChat message push (消息推送) for one app, as set in its console."""

    token: Annotated[Secret, secret(
        SecretText("the push Token", PUSH_TOKEN), REQUIRED,
        "the push Token from the console (3 to 32 letters or digits); or token_file",
        file=True, example="${WECHAT_PUSH_TOKEN}", file_example="push_token")]
    aes_key: Annotated[Secret | None, secret(
        SecretText("the EncodingAESKey", AesKey()), None,
        "the EncodingAESKey (43 characters) for compatible and safe mode; or "
        "aes_key_file; null: plaintext mode only", file=True, file_example="push_aes_key")]


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    appid: Annotated[str, key(
        Pattern(re.compile(r"[A-Za-z0-9_-]{1,64}"), "appid", "1 to 64 letters, digits, _ or -"),
        REQUIRED, "the Mini Program's appid, e.g. wx0123456789abcdef", defer=Defer.UNSET_ENV,
        example="${WECHAT_APPID}")]
    secret: Annotated[Secret | None, secret(
        SecretText("the app secret"), None,
        "the AppSecret (not for token_source external); or secret_file: a file holding it, "
        "looked up in $CREDENTIALS_DIRECTORY first", file=True, reload=RUN_LIVE,
        example="${WECHAT_SECRET}", file_example="wechat_secret")]
    token_source: Annotated[str, key(
        one_of(stable="POST /cgi-bin/stable_token, safe to share", legacy="GET /cgi-bin/token",
               external="another service keeps the token"),
        "stable", "where the app's access token comes from")]
    token_file: Annotated[Path | None, key(
        FilePath(), None,
        "external only: a file holding the token; null reads the shared access_token table")]
    kind: Annotated[str, key(
        one_of(miniprogram="a Mini Program",
               official_account="an account whose own token sends oa_template rows"),
        "miniprogram", "what the app is")]
    push: Annotated[PushConfig | None, section(
        "WeChat message push (消息推送) for `serve`, as set in the app's console; "
        "null: no push receiver", reload=SERVE_RESTART)]


@dataclass(frozen=True, slots=True)
class JobConfig:
    every: float  # seconds; declared, with each job's default, by jobs() on Config.jobs


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    batch_size: Annotated[int, key(Integer(1, 10000), 100, "rows claimed per run")]
    workers: Annotated[int, key(Integer(1, 256), 16, "concurrent sends")]
    # Shorter leases would expire while a batch is still being sent; rules.py also wants
    # 3 × http.timeout.
    lease: Annotated[float, key(
        Duration(low=10.0, high=DAY), "5m",
        "how long a claimed row stays ours, at least 3 × http.timeout")]
    on_stale: Annotated[str, key(
        one_of(retry="at-least-once", fail="at-most-once"), "retry",
        "a row whose lease ran out while sending")]
    rate_limit: Annotated[float | None, key(
        Number(0, 10000, low_open=True, nullable=True, unit="messages per second per app"),
        None, "at most this many sends start per second per app (null: unlimited)")]
    # A process is one Python interpreter, so one core at most (the GIL): N processes of
    # one daemon use N cores on one queue. Each claims only the rows whose recipient
    # falls in its share (never two sends to one openid at once, WeChat 43108).
    processes: Annotated[int, key(
        Integer(1, 64), 1,
        "dispatch processes of this daemon, each with `workers` sends (one core each; "
        "more than the host's cores gains nothing)", reload=Sighup("restart", "unused"))]
    # the waker's thread and connection are made at start
    wake: Annotated[bool, key(
        Bool(), True, "wake dispatch when a row is inserted or falls due, between polls "
        "(false: rows wait for the poll, jobs.dispatch.every)",
        reload=Sighup("restart", "unused"))]


@dataclass(frozen=True, slots=True)
class Backoff:
    base: Annotated[float, key(BACKOFF, "30s", "wait after the first failure")]
    # factor ** attempts must stay a float: 10 ** 100 does, 1e10 ** 100 overflows.
    factor: Annotated[float, key(Number(1, 10), 2, "multiplier per further failure")]
    max: Annotated[float, key(BACKOFF, "1h", "longest wait, at least base")]
    jitter: Annotated[float, key(Number(0, 1), 0.2, "random spread as a fraction of the wait")]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: Annotated[int, key(Integer(1, 100), 5, "sends per message before it fails")]
    backoff: Annotated[Backoff, section(
        "the wait after the n-th failure: min(max, base × factor^(n-1)) ± jitter")]
    daily_quota_reset: Annotated[QuotaReset, key(
        QuotaResetTime(), "00:00+08:00",
        "when WeChat's daily quota (errcode 45009) resets")]


@dataclass(frozen=True, slots=True)
class HttpConfig:
    timeout: Annotated[float, key(Duration(low=0.1, high=300.0), "10s", "per WeChat API request")]


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds each kind of finished row is kept; None = forever."""

    success: Annotated[float | None, key(RETENTION, "30d", "sent rows")]
    fail: Annotated[float | None, key(RETENTION, "90d", "failed rows")]
    cancelled: Annotated[float | None, key(RETENTION, "30d", "cancelled rows")]
    events: Annotated[float | None, key(RETENTION, "30d", "push_event inbox rows")]


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: Annotated[str | None, key(
        Listen("127.0.0.1:9464", "metrics"), "127.0.0.1:9464",
        "host:port of the Prometheus endpoint; null disables it")]
    host: str | None = field(init=False)  # from listen
    port: int | None = field(init=False)

    def __post_init__(self) -> None:
        _spread_listen(self, self.listen)


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: Annotated[str, key(
        one_of(text="one line of text", json="one JSON object a line"), "text",
        "how a log line looks")]
    level: Annotated[str, key(
        one_of("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "INFO",
        "the lowest level logged")]
    sql: Annotated[bool, key(Bool(), False, "true logs every SQL statement peewee runs (noisy)")]


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Where `serve` listens for WeChat pushes and SMS status callbacks."""

    listen: Annotated[str | None, key(
        Listen("127.0.0.1:8080", "the push receiver"), "127.0.0.1:8080",
        "host:port for WeChat pushes and SMS callbacks, behind a TLS reverse proxy; "
        "null disables it")]
    host: str | None = field(init=False)  # from listen
    port: int | None = field(init=False)
    push_max_age: Annotated[float, key(
        Duration(low=10.0, high=DAY), "5m",
        "a POST push whose timestamp is further than this from now, either way, is "
        "refused (a replay)")]

    def __post_init__(self) -> None:
        _spread_listen(self, self.listen)


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    name: str
    password_hash: Annotated[Secret, key(
        SecretText("a password hash", Pattern(re.compile(r"scrypt\$\S+"), "password hash",
                                             "the scrypt$... line that `herald "
                                             "console-password` prints")),
        REQUIRED, "what `herald console-password` prints (scrypt$...)", hidden=True)]
    role: Annotated[str, key(
        one_of(viewer="reads", operator="also re-drives and cancels"), "viewer",
        "what the user may do")]


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    listen: Annotated[str | None, key(
        Listen("127.0.0.1:9465", "the console"), "127.0.0.1:9465",
        "host:port of the console; null disables it")]
    host: str | None = field(init=False)  # from listen
    port: int | None = field(init=False)
    users: Annotated[Mapping[str, ConsoleUser], names(
        "who may log in to the console", r"[a-z][a-z0-9_.-]{0,31}", "user name",
        "a lowercase letter, then up to 31 lowercase letters, digits, _, . or -",
        "one console user",
        example={"ann": {"password_hash": "scrypt$...", "role": "operator"},
                 "bob": {"password_hash": "scrypt$...", "role": "viewer"}})]
    session_ttl: Annotated[float, key(
        Duration(low=60.0, high=30 * DAY), "12h", "a login lasts this long")]
    cookie_secure: Annotated[bool, key(
        Bool(), False, "true sends the session cookie over HTTPS only: set it behind HTTPS")]

    def __post_init__(self) -> None:
        _spread_listen(self, self.listen)


@dataclass(frozen=True, slots=True)
class GrantsConfig:
    on_missing: Annotated[str, key(
        one_of(send="the ledger only observes", hold="wait for a grant or expire_at",
               fail="error no grant"), "send",
        "a row whose user has no grant for its template")]


@dataclass(frozen=True, slots=True)
class ReceiptsConfig:
    missing_after: Annotated[float, key(
        Duration(low=60.0, high=30 * DAY), "30m",
        "a success with no delivery receipt after this long counts as missing")]


@dataclass(frozen=True, slots=True)
class SmsConfig:
    """Tencent Cloud SMS (API 3.0)."""

    secret_id: Annotated[Secret, secret(
        SecretText("the SecretId", Pattern(re.compile(r"[A-Za-z0-9]{1,128}"), "SecretId",
                                           "letters and digits, e.g. AKID...")),
        REQUIRED, "the API key's SecretId (Tencent Cloud CAM console)",
        example="${TENCENTCLOUD_SECRET_ID}")]
    secret_key: Annotated[Secret, secret(
        SecretText("the SecretKey"), REQUIRED, "the API key's SecretKey; or secret_key_file",
        file=True, example="${TENCENTCLOUD_SECRET_KEY}", file_example="tencent_sms_key")]
    sdk_app_id: Annotated[str, key(
        Digits("SdkAppId", '"1400006666"'), REQUIRED,
        'the SMS application\'s SdkAppId, e.g. "1400006666"', example="1400006666")]
    sign_name: Annotated[str, key(
        Pattern(re.compile(r"\S(?:[^\x00-\x1f\x7f]{0,30}\S)?"), "sign name",
                "1 to 32 characters on one line, e.g. 某某商城"),
        REQUIRED, "the approved signature (签名), e.g. 某某商城; a template may override it",
        example="某某商城")]
    region: Annotated[str, key(
        Pattern(re.compile(r"[a-z]{2,4}(?:-[a-z0-9]{1,24}){1,3}"), "region",
                "a Tencent Cloud region such as ap-guangzhou"),
        "ap-guangzhou", "the API region")]
    endpoint: Annotated[str, key(
        HttpUrl("https://sms.tencentcloudapi.com"), "https://sms.tencentcloudapi.com",
        "the SMS API root (the tests point it at the sandbox)")]
    callback_token: Annotated[Secret | None, secret(
        SecretText("the callback token",
                   Pattern(re.compile(r"[A-Za-z0-9_-]{16,128}"), "callback token",
                           "16 to 128 letters, digits, _ or -")),
        None, "the secret last segment of the status callback URL "
              "/tencent/sms/status/<callback_token>; null: no callbacks",
        reload=SERVE_RESTART, example="${HERALD_SMS_CALLBACK}")]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    database: Annotated[str, key(
        DatabaseUrl(), "sqlite:///herald.db",
        "the queue: sqlite:///file.db, postgresql://user@host/db or mysql://user@host/db "
        "(each may take +pool); HERALD_DATABASE overrides it",
        env_override=DATABASE_ENV, reload=RESTART)]
    api_base: Annotated[str, key(
        HttpUrl("https://api.weixin.qq.com"), "https://api.weixin.qq.com",
        "WeChat API root (the tests point it at the sandbox)", reload=RUN_LIVE)]
    templates: Annotated[Path, key(
        FilePath(), "templates.yaml", "the message templates file", reload=BOTH_LIVE)]
    apps: Annotated[Mapping[str, AppConfig], names(
        "one entry per app; queue rows whose app is NULL use the app named default",
        r"[a-z][a-z0-9_]{0,31}", "app name",
        "a lowercase letter, then up to 31 lowercase letters, digits or _",
        "one app's credentials",
        empty="no apps configured (give at least one, e.g. "
              "apps: {default: {appid: ..., secret: ...}})",
        default={"default": {"appid": "${WECHAT_APPID}", "secret": "${WECHAT_SECRET}"}},
        default_note="there is no apps section, so the app 'default' takes its appid and "
                     "secret from WECHAT_APPID and WECHAT_SECRET",
        # which account an app name means, how its token is kept, and the set of apps:
        # the shared token row, per-app locks and holds are built on them
        reload=RESTART)]
    jobs: Annotated[Mapping[str, JobConfig], jobs(
        "how often each scheduled job runs", JOB_EVERY,
        Job("dispatch", "60s", "claim and send due messages"),
        Job("token_refresh", "5m", "renew access tokens before they expire"),
        Job("stale_retry", "1m", "recover rows whose sending lease ran out"),
        Job("purge", "1h", "delete finished rows older than their retention"),
        Job("events", "5s", "apply pushed events and application-reported grants",
            reload=Sighup("live", "restart")),
        reload=RUN_LIVE)]
    dispatch: Annotated[DispatchConfig, section(
        "how due rows are claimed and sent", reload=RUN_LIVE)]
    retry: Annotated[RetryConfig, section("what happens after a failed send", reload=RUN_LIVE)]
    http: Annotated[HttpConfig, section("outgoing HTTP requests", reload=RUN_LIVE)]
    retention: Annotated[Retention, section(
        "how long finished rows are kept before purge deletes them", reload=RUN_LIVE)]
    metrics: Annotated[MetricsConfig, section(
        "the Prometheus endpoint", reload=Sighup("restart", "unused"))]
    log: Annotated[LogConfig, section("logging", reload=BOTH_LIVE)]
    web: Annotated[WebConfig, section("the HTTP side `serve` runs", reload=SERVE_RESTART)]
    console: Annotated[ConsoleConfig, section(
        "the operator console `serve` runs", reload=SERVE_RESTART)]
    grants: Annotated[GrantsConfig, section(
        "the subscription ledger (push events, app reports)", reload=Sighup("live", "restart"))]
    # `run`'s collector counts missing receipts with the value it was built with
    receipts: Annotated[ReceiptsConfig, section("delivery receipts", reload=RESTART)]
    sms: Annotated[SmsConfig | None, section(
        "Tencent Cloud SMS for the sms channel; null: no SMS", reload=RUN_LIVE,
        toggle=Sighup("live", "restart"))]
    timezone: Annotated[str, key(
        TimeZone(), "Asia/Shanghai",
        "the zone of templates' send_window times (docs/grants.md)", reload=RUN_LIVE)]
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


__all__ = [
    "AppConfig", "Backoff", "Config", "ConfigError", "ConsoleConfig", "ConsoleUser",
    "DispatchConfig", "GrantsConfig", "HttpConfig", "JobConfig", "LogConfig", "MetricsConfig",
    "PushConfig", "QuotaReset", "ReceiptsConfig", "Retention", "RetryConfig", "Secret",
    "SmsConfig", "UnknownAppError", "WebConfig", "mask_url",
]
