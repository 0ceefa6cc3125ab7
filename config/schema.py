"""Every key of config.yaml, declared once: type and limits (the check), default, help.

Validation, defaults, the unknown-key and did-you-mean checks, and the dataclasses all
come from this table; config.yaml must mention every key in it
(tests/test_config_checks.py checks). Adding a key: one line here, one field on its
dataclass in model.py, one line in config.yaml.

    key(path, check, default, help)      a value; default as written in YAML, or REQUIRED
    secret(path, check, default, help)   a credential: never shown, deferrable
    section(path, Dataclass, help)       a mapping with fixed keys
    names(path, help, pattern, ...)      a mapping from names the user picks to sections
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Final

from .model import (
    AppConfig,
    Backoff,
    ConsoleConfig,
    ConsoleUser,
    DispatchConfig,
    GrantsConfig,
    HttpConfig,
    JobConfig,
    LogConfig,
    MetricsConfig,
    PushConfig,
    ReceiptsConfig,
    Retention,
    RetryConfig,
    SmsConfig,
    WebConfig,
)
from .spec import REQUIRED, Decl, Defer, Schema, key, names, secret, section
from .values import (
    Address,
    AesKey,
    Bool,
    Choice,
    DatabaseUrl,
    Digits,
    Duration,
    FilePath,
    HttpUrl,
    Integer,
    Listen,
    Number,
    Pattern,
    QuotaResetTime,
    SecretText,
)


def frozen_mapping(**items: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(items)


class WithAddress:
    """Builds `cls` from its section, the parsed `listen` spread into listen, host, port."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, listen: Address | None, **rest: Any) -> Any:
        if listen is None:
            return self.cls(listen=None, host=None, port=None, **rest)
        return self.cls(listen=listen.text, host=listen.host, port=listen.port, **rest)


def job(name: str, every: str, help: str) -> tuple[Decl, Decl]:
    return (section(f"jobs.{name}", JobConfig, help),
            key(f"jobs.{name}.every", JOB_EVERY, every, f"how often: {help}"))


DATABASE_ENV: Final = "HERALD_DATABASE"
TOKEN_SOURCES: Final = ("stable", "legacy", "external")
# Limits no real operator meets; they exist to catch typos (1e12, a lost unit) at start-up.
DAY: Final = 86400.0
JOB_EVERY: Final = Duration(low=0.1, high=DAY)
BACKOFF: Final = Duration(high=7 * DAY)
RETENTION: Final = Duration(high=36500 * DAY, forever=True)  # 100 years
PUSH_TOKEN: Final = Pattern(re.compile(r"[A-Za-z0-9]{3,32}"), "push Token",
                            "3 to 32 letters or digits, as set in the console")

DECLARATIONS: Final[tuple[Decl, ...]] = (
    key("database", DatabaseUrl(), "sqlite:///herald.db",
        "the queue: sqlite:///file.db, postgresql://user@host/db or mysql://user@host/db "
        "(each may take +pool); HERALD_DATABASE overrides it", env_override=DATABASE_ENV),
    key("api_base", HttpUrl("https://api.weixin.qq.com"), "https://api.weixin.qq.com",
        "WeChat API root, http or https (the tests point it at the sandbox)"),
    key("templates", FilePath(), "templates.yaml",
        "the message templates file, relative to this file"),

    names("apps", "one entry per app; queue rows whose app is NULL use the app named default",
          r"[a-z][a-z0-9_]{0,31}", "app name",
          "a lowercase letter, then up to 31 lowercase letters, digits or _",
          empty="no apps configured (give at least one, e.g. "
                "apps: {default: {appid: ..., secret: ...}})",
          default={"default": {"appid": "${WECHAT_APPID}", "secret": "${WECHAT_SECRET}"}},
          default_note="there is no apps section, so the app 'default' takes its appid and "
                       "secret from WECHAT_APPID and WECHAT_SECRET"),
    section("apps.<name>", AppConfig, "one app's credentials"),
    key("apps.<name>.appid",
        Pattern(re.compile(r"[A-Za-z0-9_-]{1,64}"), "appid", "1 to 64 letters, digits, _ or -"),
        REQUIRED, "the Mini Program's appid, e.g. wx0123456789abcdef", defer=Defer.UNSET_ENV),
    secret("apps.<name>.secret", SecretText("the app secret"), None,
           "the AppSecret; or secret_file: a file holding it, looked up in "
           "$CREDENTIALS_DIRECTORY first", file=True),
    key("apps.<name>.token_source", Choice(TOKEN_SOURCES), "stable",
        "stable (POST /cgi-bin/stable_token, safe to share) | legacy (GET /cgi-bin/token) | "
        "external (another service keeps the token)"),
    key("apps.<name>.token_file", FilePath(), None,
        "external only: a file holding the token; null reads the shared access_token table"),
    key("apps.<name>.kind", Choice(("miniprogram", "official_account")), "miniprogram",
        "miniprogram | official_account (an account whose own token sends oa_template rows)"),
    section("apps.<name>.push", PushConfig,
            "WeChat message push (消息推送) for `serve`, as set in the app's console; "
            "null: no push receiver", optional=True),
    secret("apps.<name>.push.token", SecretText("the push Token", PUSH_TOKEN), REQUIRED,
           "the push Token from the console (3 to 32 letters or digits); or token_file",
           file=True),
    secret("apps.<name>.push.aes_key", SecretText("the EncodingAESKey", AesKey()), None,
           "the EncodingAESKey (43 characters) for compatible and safe mode; or "
           "aes_key_file; null: plaintext mode only", file=True),

    section("jobs", frozen_mapping, "how often each scheduled job runs"),
    *job("dispatch", "60s", "claim and send due messages"),
    *job("token_refresh", "5m", "renew access tokens before they expire"),
    *job("stale_retry", "1m", "recover rows whose sending lease ran out"),
    *job("purge", "1h", "delete finished rows older than their retention"),
    *job("events", "5s", "apply pushed events and application-reported grants"),

    section("dispatch", DispatchConfig, "how due rows are claimed and sent"),
    key("dispatch.batch_size", Integer(1, 10000), 100, "rows claimed per run"),
    key("dispatch.workers", Integer(1, 256), 16, "concurrent sends"),
    # Shorter leases would expire while a batch is still being sent; rules.py also wants
    # 3 × http.timeout.
    key("dispatch.lease", Duration(low=10.0, high=DAY), "5m",
        "how long a claimed row stays ours; at least 10s and 3 × http.timeout"),
    key("dispatch.on_stale", Choice(("retry", "fail")), "retry",
        "a row whose lease ran out while sending: retry (at-least-once) | fail (at-most-once)"),
    key("dispatch.rate_limit",
        Number(0, 10000, low_open=True, nullable=True, unit="messages per second per app"),
        None, "at most this many sends per second per app; null: unlimited"),

    section("retry", RetryConfig, "what happens after a failed send"),
    key("retry.max_attempts", Integer(1, 100), 5, "sends per message before it fails"),
    section("retry.backoff", Backoff,
            "the wait after the n-th failure: min(max, base × factor^(n-1)) ± jitter"),
    key("retry.backoff.base", BACKOFF, "30s", "wait after the first failure"),
    # factor ** attempts must stay a float: 10 ** 100 does, 1e10 ** 100 overflows.
    key("retry.backoff.factor", Number(1, 10), 2, "multiplier per further failure"),
    key("retry.backoff.max", BACKOFF, "1h", "longest wait, at least base"),
    key("retry.backoff.jitter", Number(0, 1), 0.2, "random spread as a fraction of the wait"),
    key("retry.daily_quota_reset", QuotaResetTime(), "00:00+08:00",
        "when WeChat's daily quota (errcode 45009) resets, HH:MM±HH:MM"),

    section("http", HttpConfig, "outgoing HTTP requests"),
    key("http.timeout", Duration(low=0.1, high=300.0), "10s", "per WeChat API request"),

    section("retention", Retention, "how long finished rows are kept before purge deletes them"),
    key("retention.success", RETENTION, "30d", "sent rows; forever keeps them"),
    key("retention.fail", RETENTION, "90d", "failed rows; forever keeps them"),
    key("retention.cancelled", RETENTION, "30d", "cancelled rows; forever keeps them"),
    key("retention.events", RETENTION, "30d", "push_event inbox rows; forever keeps them"),

    section("metrics", WithAddress(MetricsConfig), "the Prometheus endpoint"),
    key("metrics.listen", Listen("127.0.0.1:9464", "metrics"), "127.0.0.1:9464",
        "host:port of the Prometheus endpoint; null disables it"),

    section("log", LogConfig, "logging"),
    key("log.format", Choice(("text", "json")), "text", "text | json (one object a line)"),
    key("log.level", Choice(("DEBUG", "INFO", "WARNING", "ERROR"), upper=True), "INFO",
        "DEBUG | INFO | WARNING | ERROR"),
    key("log.sql", Bool(), False, "true logs every SQL statement peewee runs (noisy)"),

    section("web", WithAddress(WebConfig), "the HTTP side `serve` runs"),
    key("web.listen", Listen("127.0.0.1:8080", "the push receiver"), "127.0.0.1:8080",
        "host:port for WeChat pushes and SMS callbacks, behind a TLS reverse proxy; "
        "null disables it"),
    key("web.push_max_age", Duration(low=10.0, high=DAY), "5m",
        "a POST push whose timestamp is further than this from now, either way, is "
        "refused (a replay); 10s to 1d"),

    section("console", WithAddress(ConsoleConfig), "the operator console `serve` runs"),
    key("console.listen", Listen("127.0.0.1:9465", "the console"), "127.0.0.1:9465",
        "host:port of the console; null disables it"),
    names("console.users", "who may log in to the console", r"[a-z][a-z0-9_.-]{0,31}",
          "user name", "a lowercase letter, then up to 31 lowercase letters, digits, _, . or -"),
    section("console.users.<name>", ConsoleUser, "one console user"),
    key("console.users.<name>.password_hash",
        SecretText("a password hash", Pattern(re.compile(r"scrypt\$\S+"), "password hash",
                                             "the scrypt$... line that `herald "
                                             "console-password` prints")),
        REQUIRED, "what `herald console-password` prints (scrypt$...)", hidden=True),
    key("console.users.<name>.role", Choice(("viewer", "operator")), "viewer",
        "viewer (reads) | operator (also re-drives and cancels)"),
    key("console.session_ttl", Duration(low=60.0, high=30 * DAY), "12h",
        "a login lasts this long, 1m to 30d"),
    key("console.cookie_secure", Bool(), False,
        "true sends the session cookie over HTTPS only: set it behind HTTPS"),

    section("grants", GrantsConfig, "the subscription ledger (push events, app reports)"),
    key("grants.on_missing", Choice(("send", "hold", "fail")), "send",
        "a row whose user has no grant for its template: send (the ledger only observes) | "
        "hold (wait for a grant or expire_at) | fail (error no grant)"),

    section("receipts", ReceiptsConfig, "delivery receipts"),
    key("receipts.missing_after", Duration(low=60.0, high=30 * DAY), "30m",
        "a success with no delivery receipt after this long counts as missing"),

    section("sms", SmsConfig, "Tencent Cloud SMS for the sms channel; null: no SMS",
            optional=True),
    secret("sms.secret_id",
           SecretText("the SecretId", Pattern(re.compile(r"[A-Za-z0-9]{1,128}"), "SecretId",
                                              "letters and digits, e.g. AKID...")),
           REQUIRED, "the API key's SecretId (Tencent Cloud CAM console)"),
    secret("sms.secret_key", SecretText("the SecretKey"), REQUIRED,
           "the API key's SecretKey; or secret_key_file", file=True),
    key("sms.sdk_app_id", Digits("SdkAppId", '"1400006666"'), REQUIRED,
        'the SMS application\'s SdkAppId, e.g. "1400006666"'),
    key("sms.sign_name",
        Pattern(re.compile(r"\S(?:[^\x00-\x1f\x7f]{0,30}\S)?"), "sign name",
                "1 to 32 characters on one line, e.g. 某某商城"),
        REQUIRED, "the approved signature (签名), e.g. 某某商城; a template may override it"),
    key("sms.region",
        Pattern(re.compile(r"[a-z]{2,4}(?:-[a-z0-9]{1,24}){1,3}"), "region",
                "a Tencent Cloud region such as ap-guangzhou"),
        "ap-guangzhou", "the API region"),
    key("sms.endpoint", HttpUrl("https://sms.tencentcloudapi.com"),
        "https://sms.tencentcloudapi.com", "the SMS API root (the tests point it at the sandbox)"),
    secret("sms.callback_token",
           SecretText("the callback token",
                      Pattern(re.compile(r"[A-Za-z0-9_-]{16,128}"), "callback token",
                              "16 to 128 letters, digits, _ or -")),
           None, "the secret last segment of the status callback URL "
                 "/tencent/sms/status/<callback_token>; null: no callbacks"),
)

SCHEMA: Final = Schema(dict, *DECLARATIONS)
