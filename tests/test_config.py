"""Tests for config.py: loading, validation messages, secrets, immutability, quota resets."""

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from config import (
    AppConfig,
    Config,
    ConfigError,
    QuotaReset,
    Secret,
    config_from_dict,
    load_config,
    parse_duration,
)

SHIPPED = Path(__file__).parent.parent / "config.yaml"
SECRET_VALUE = "s3cr3t-VALUE-never-shown"
ENV = {"WECHAT_APPID": "wx0123456789abcdef", "WECHAT_SECRET": SECRET_VALUE}
ALLOWED_TOP = ("database, api_base, templates, apps, jobs, dispatch, retry, http, retention, "
               "metrics, log, web, console, grants, receipts, sms, timezone")


def write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(folder, text), env=ENV if env is None else env)


def problems(folder: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(folder, text, env)
    return caught.value.problems


def from_dict(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    return config_from_dict(data, base_dir=tmp_path, env=ENV if env is None else env)


def dict_problems(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
                  ) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        from_dict(data, tmp_path, env)
    return caught.value.problems


APP = "apps:\n  default:\n    appid: wx0123456789abcdef\n    secret: abc\n"


# --------------------------------------------------------------------------- defaults


def test_defaults(tmp_path: Path) -> None:
    config = from_dict({}, tmp_path)
    assert config.path is None
    assert config.database == f"sqlite:///{tmp_path.resolve()}/herald.db"
    assert config.database.startswith("sqlite:////")
    assert config.api_base == "https://api.weixin.qq.com"
    assert config.templates == tmp_path.resolve() / "templates.yaml"
    assert list(config.apps) == ["default"]
    app = config.apps["default"]
    assert app == AppConfig(name="default", appid="wx0123456789abcdef",
                            secret=Secret(SECRET_VALUE), token_source="stable", token_file=None,
                            kind="miniprogram", push=None)
    assert isinstance(config.apps, MappingProxyType)
    assert isinstance(config.jobs, MappingProxyType)
    assert {name: job.every for name, job in config.jobs.items()} == {
        "dispatch": 60.0, "token_refresh": 300.0, "stale_retry": 60.0, "purge": 3600.0,
        "events": 5.0}
    assert config.dispatch.batch_size == 100
    assert config.dispatch.workers == 16
    assert config.dispatch.lease == 300.0
    assert config.dispatch.on_stale == "retry"
    assert config.dispatch.rate_limit is None
    assert config.retry.max_attempts == 5
    backoff = config.retry.backoff
    assert (backoff.base, backoff.factor, backoff.max, backoff.jitter) == (30.0, 2.0, 3600.0, 0.2)
    assert config.retry.daily_quota_reset == QuotaReset(0, 0, 480)
    assert config.http.timeout == 10.0
    assert (config.retention.success, config.retention.fail, config.retention.cancelled) == (
        30 * 86400.0, 90 * 86400.0, 30 * 86400.0)
    assert (config.metrics.listen, config.metrics.host, config.metrics.port) == (
        "127.0.0.1:9464", "127.0.0.1", 9464)
    assert (config.log.format, config.log.level) == ("text", "INFO")


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "# nothing set\n")
    assert config == dataclasses.replace(from_dict({}, tmp_path),
                                         path=(tmp_path / "config.yaml").resolve())


def test_null_section_means_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "dispatch:\njobs:\n  purge:\nretry:\n  backoff:\n")
    assert config.dispatch.workers == 16
    assert config.jobs["purge"].every == 3600.0
    assert config.retry.backoff.base == 30.0


def test_shipped_config_loads_with_env(tmp_path: Path) -> None:
    config = load_config(SHIPPED, env=ENV)
    assert config.path == SHIPPED.resolve()
    # Every key in the sample is at its default.
    defaults = config_from_dict({}, base_dir=SHIPPED.parent, env=ENV, path=SHIPPED.resolve())
    assert config == defaults
    assert config.app(None).secret == Secret(SECRET_VALUE)


def test_shipped_config_needs_wechat_env() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(SHIPPED, env={})
    assert caught.value.problems == [
        "apps.default.appid: environment variable WECHAT_APPID is not set "
        "(set it, or write ${WECHAT_APPID:-default})",
        "apps.default.secret: environment variable WECHAT_SECRET is not set "
        "(set it, or write ${WECHAT_SECRET:-default})",
    ]


def test_full_config_values(tmp_path: Path) -> None:
    config = load(tmp_path, """
database: postgresql+pool://herald@db.internal:5432/herald
api_base: http://127.0.0.1:8080/wx/
templates: conf/templates.yaml
apps:
  default: {appid: wxaaaaaaaaaaaaaaaa, secret: one}
  shop: {appid: wxbbbbbbbbbbbbbbbb, token_source: external, token_file: run/token}
jobs:
  dispatch: {every: 5s}
  purge: {every: 1d}
dispatch: {batch_size: 10000, workers: 1, lease: 10s, on_stale: fail, rate_limit: 2.5}
retry:
  max_attempts: 100
  backoff: {base: 1m, factor: 1, max: 1m, jitter: 0}
  daily_quota_reset: "23:30-05:30"
http: {timeout: 2.5}
retention: {success: 1d, fail: 2d, cancelled: 12h}
metrics: {listen: "[::1]:0"}
log: {format: json, level: debug}
""")
    assert config.database == "postgresql+pool://herald@db.internal:5432/herald"
    assert config.api_base == "http://127.0.0.1:8080/wx"
    assert config.templates == tmp_path.resolve() / "conf" / "templates.yaml"
    assert list(config.apps) == ["default", "shop"]
    shop = config.app("shop")
    assert shop.secret is None
    assert shop.token_source == "external"
    assert shop.token_file == tmp_path.resolve() / "run" / "token"
    assert config.jobs["dispatch"].every == 5.0
    assert config.jobs["token_refresh"].every == 300.0  # unnamed jobs keep their default
    assert config.jobs["purge"].every == 86400.0
    assert config.dispatch == type(config.dispatch)(10000, 1, 10.0, "fail", 2.5, 1, True)
    assert config.retry.max_attempts == 100
    assert config.retry.backoff == type(config.retry.backoff)(60.0, 1.0, 60.0, 0.0)
    assert config.retry.daily_quota_reset == QuotaReset(23, 30, -330)
    assert config.http.timeout == 2.5
    assert config.retention == type(config.retention)(86400.0, 172800.0, 43200.0,
                                                      30 * 86400.0)  # events: the default
    assert (config.metrics.listen, config.metrics.host, config.metrics.port) == ("[::1]:0",
                                                                                 "::1", 0)
    assert (config.log.format, config.log.level) == ("json", "DEBUG")


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("value", "seconds"), [
    ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("30d", 2592000.0), ("1.5h", 5400.0),
    ("0.5s", 0.5), (45, 45.0), (2.5, 2.5), ("60", 60.0), (" 5m ", 300.0), ("1e3", 1000.0),
])
def test_duration_forms(value: object, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", [
    "5 minutes", "5M", "5ms", "1w", "-5s", "", "s", "5 m", "1h30m", True, None, [1], {"m": 5},
    float("inf"), float("nan"), "inf",
])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "jobs.dispatch.every")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("jobs.dispatch.every: ")
    assert caught.value.problems[0].endswith(
        "is not a duration (use 90s, 5m, 1h, 30d or a number of seconds)")


@pytest.mark.parametrize("value", [0, -1, -0.5, "0s", "0", "0.0m", 0.0])
def test_zero_and_negative_durations(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "http.timeout")
    assert caught.value.problems[0].startswith("http.timeout: ")
    assert caught.value.problems[0].endswith("must be greater than 0")


def test_duration_error_message_in_config(tmp_path: Path) -> None:
    assert problems(tmp_path, "jobs:\n  dispatch:\n    every: 5 minutes\n") == [
        "jobs.dispatch.every: '5 minutes' is not a duration "
        "(use 90s, 5m, 1h, 30d or a number of seconds)"]


def test_lease_minimum(tmp_path: Path) -> None:
    # A 10s lease also needs http.timeout of at most a third of it (test_config_checks.py).
    fast = {"http": {"timeout": "3s"}}
    assert from_dict({"dispatch": {"lease": "10s"}, **fast}, tmp_path).dispatch.lease == 10.0
    assert dict_problems({"dispatch": {"lease": 9.5}, **fast}, tmp_path) == [
        "dispatch.lease: 9.5 is too short (must be at least 10s)"]


def test_parse_duration_error_is_a_config_error_without_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration("soon", "retention.fail")
    assert caught.value.path is None
    assert str(caught.value) == ("invalid configuration:\n  - retention.fail: 'soon' is not a "
                                 "duration (use 90s, 5m, 1h, 30d or a number of seconds)")


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert problems(tmp_path, "databse: sqlite:///x.db\n") == [
        f"databse: unknown key, did you mean 'database'? (allowed: {ALLOWED_TOP})"]


def test_unknown_nested_keys(tmp_path: Path) -> None:
    found = problems(tmp_path, """
apps:
  default: {appid: wx1, secret: abc, secert: abc}
dispatch: {wokers: 4}
retry: {backoff: {bse: 1s}}
jobs:
  dispatch: {when: 5s}
  cleanup: {every: 1h}
metrics: {port: 9}
""")
    assert found == [
        "apps.default.secert: unknown key, did you mean 'secret'? "
        "(allowed: appid, secret, secret_file, token_source, token_file, kind, push)",
        "jobs.cleanup: unknown key (allowed: dispatch, token_refresh, stale_retry, purge, "
        "events)",
        "jobs.dispatch.when: unknown key (allowed: every)",
        "dispatch.wokers: unknown key, did you mean 'workers'? "
        "(allowed: batch_size, workers, lease, on_stale, rate_limit, processes, wake)",
        "retry.backoff.bse: unknown key, did you mean 'base'? (allowed: base, factor, max, jitter)",
        "metrics.port: unknown key (allowed: listen)",
    ]


def test_unknown_key_value_is_not_shown(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + "    secrte: hunter2\n")
    assert len(found) == 1
    assert "hunter2" not in found[0]


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "dispatch: 5\nlog: [text]\n") == [
        "dispatch: 5 is not a mapping (allowed keys: batch_size, workers, lease, on_stale, "
        "rate_limit, processes, wake)",
        "log: a list is not a mapping (allowed keys: format, level, sql)",
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    found = problems(tmp_path, "- database\n")
    assert found == [f"(top level): a list is not a mapping of settings (allowed keys: "
                     f"{ALLOWED_TOP})"]


# --------------------------------------------------------------------------- enums and numbers


def test_bad_enum_lists_allowed_values(tmp_path: Path) -> None:
    found = problems(tmp_path, APP.replace("secret: abc", "secret: abc\n    token_source: cache")
                     + "dispatch: {on_stale: maybe}\nlog: {format: xml, level: trace}\n")
    assert found == [
        "apps.default.token_source: 'cache' is not allowed (allowed: stable, legacy, external)",
        "dispatch.on_stale: 'maybe' is not allowed (allowed: retry, fail)",
        "log.format: 'xml' is not allowed (allowed: text, json)",
        "log.level: 'trace' is not allowed (allowed: DEBUG, INFO, WARNING, ERROR, "
        "case-insensitive)",
    ]


@pytest.mark.parametrize(("written", "stored"), [("debug", "DEBUG"), ("Warning", "WARNING"),
                                                 ("ERROR", "ERROR")])
def test_log_level_case_insensitive(tmp_path: Path, written: str, stored: str) -> None:
    assert from_dict({"log": {"level": written}}, tmp_path).log.level == stored


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("dispatch", "batch_size", 0, "0 is not allowed (an integer from 1 to 10000)"),
    ("dispatch", "batch_size", 10001, "10001 is not allowed (an integer from 1 to 10000)"),
    ("dispatch", "workers", 257, "257 is not allowed (an integer from 1 to 256)"),
    ("dispatch", "workers", 16.0, "16.0 is not allowed (an integer from 1 to 256)"),
    ("dispatch", "workers", "16", "'16' is not allowed (an integer from 1 to 256)"),
    ("dispatch", "workers", True, "true is not allowed (an integer from 1 to 256)"),
    ("dispatch", "workers", None, "null is not allowed (an integer from 1 to 256)"),
    ("dispatch", "rate_limit", 0,
     "0 is not allowed (null or a number > 0 and at most 10000, messages per second per app)"),
    ("dispatch", "rate_limit", "fast",
     "'fast' is not allowed (null or a number > 0 and at most 10000, messages per second per "
     "app)"),
    ("retry", "max_attempts", 101, "101 is not allowed (an integer from 1 to 100)"),
])
def test_bad_numbers(tmp_path: Path, section: str, key: str, value: object, message: str
                     ) -> None:
    assert dict_problems({section: {key: value}}, tmp_path) == [f"{section}.{key}: {message}"]


def test_backoff_rules(tmp_path: Path) -> None:
    found = dict_problems({"retry": {"backoff": {"factor": 0.5, "jitter": 1.5, "base": "2h"}}},
                          tmp_path)
    assert found == [
        "retry.backoff.factor: 0.5 is not allowed (a number from 1 to 10)",
        "retry.backoff.jitter: 1.5 is not allowed (a number from 0 to 1)",
        "retry.backoff.max: the default 1h is shorter than retry.backoff.base '2h' "
        "(max must be >= base)",
    ]
    found = dict_problems({"retry": {"backoff": {"base": "10m", "max": "5m"}}}, tmp_path)
    assert found == ["retry.backoff.max: '5m' is shorter than retry.backoff.base '10m' "
                     "(max must be >= base)"]
    # No second complaint about max when base itself is broken.
    found = dict_problems({"retry": {"backoff": {"base": "never", "max": "5s"}}}, tmp_path)
    assert len(found) == 1 and found[0].startswith("retry.backoff.base:")


def test_rate_limit_values(tmp_path: Path) -> None:
    assert from_dict({"dispatch": {"rate_limit": 20}}, tmp_path).dispatch.rate_limit == 20.0
    assert from_dict({"dispatch": {"rate_limit": None}}, tmp_path).dispatch.rate_limit is None


# --------------------------------------------------------------------------- apps


def test_missing_appid(tmp_path: Path) -> None:
    assert problems(tmp_path, "apps:\n  default:\n    secret: abc\n") == [
        "apps.default.appid: missing (required: the Mini Program's appid, e.g. wx0123456789abcdef)"]


@pytest.mark.parametrize(("appid", "message"), [
    ("''", "'' is not a valid appid (allowed: 1 to 64 letters, digits, _ or -)"),
    ("wx 123", "'wx 123' is not a valid appid (allowed: 1 to 64 letters, digits, _ or -)"),
    ("12345", "12345 is not a string (quote it in YAML)"),
])
def test_bad_appid(tmp_path: Path, appid: str, message: str) -> None:
    found = problems(tmp_path, f"apps:\n  default:\n    appid: {appid}\n    secret: abc\n")
    assert found == [f"apps.default.appid: {message}"]


def test_app_names(tmp_path: Path) -> None:
    found = problems(tmp_path, """
apps:
  Shop: {appid: wx1, secret: a}
  9lives: {appid: wx2, secret: a}
  a_very_long_name_that_is_over_32_chars: {appid: wx3, secret: a}
  ok_name_2: {appid: wx4, secret: a}
""")
    assert [line.split(":")[0] for line in found] == [
        "apps.Shop", "apps.9lives", "apps.a_very_long_name_that_is_over_32_chars"]
    assert "is not a valid app name" in found[0]


def test_no_apps_section_reads_wechat_env(tmp_path: Path) -> None:
    config = load(tmp_path, "log: {level: info}\n")
    assert config.app(None).appid == ENV["WECHAT_APPID"]
    assert config.app(None).secret == Secret(SECRET_VALUE)
    found = problems(tmp_path, "log: {level: info}\n", env={"WECHAT_SECRET": "x"})
    assert found == ["apps.default.appid: environment variable WECHAT_APPID is not set "
                     "(there is no apps section, so the app 'default' takes its appid and "
                     "secret from WECHAT_APPID and WECHAT_SECRET)"]


def test_empty_apps_is_an_error(tmp_path: Path) -> None:
    assert problems(tmp_path, "apps: {}\n")[0].startswith("apps: no apps configured")


def test_secret_required_unless_external(tmp_path: Path) -> None:
    found = problems(tmp_path, "apps:\n  default: {appid: wx1, token_source: legacy}\n")
    assert found == ["apps.default.secret: missing (required for token_source 'legacy'; "
                     "give secret or secret_file)"]
    config = load(tmp_path, "apps:\n  default: {appid: wx1, token_source: external}\n")
    assert config.app(None).secret is None
    assert config.app(None).token_file is None
    # Allowed (if unused) for external.
    config = load(tmp_path, "apps:\n  default: {appid: wx1, token_source: external, secret: x}\n")
    assert config.app(None).secret == Secret("x")


def test_token_file_only_for_external(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + "    token_file: /run/token\n")
    assert found == ["apps.default.token_file: '/run/token' is not allowed with token_source "
                     "'stable' (token_file is only for token_source external)"]
    config = load(tmp_path, "apps:\n  default: {appid: wx1, token_source: external, "
                            "token_file: /run/herald/token}\n")
    assert config.app(None).token_file == Path("/run/herald/token")


def test_app_lookup(tmp_path: Path) -> None:
    config = load(tmp_path, APP + "  shop: {appid: wxshop, secret: b}\n")
    assert config.app(None) is config.apps["default"]
    assert config.app("default") is config.apps["default"]
    assert config.app("shop").appid == "wxshop"
    with pytest.raises(KeyError) as caught:
        config.app("blog")
    assert str(caught.value) == "unknown app 'blog' (configured: default, shop)"
    assert caught.value.args[0] == "unknown app 'blog' (configured: default, shop)"


def test_app_none_without_default_app(tmp_path: Path) -> None:
    config = load(tmp_path, "apps:\n  shop: {appid: wxshop, secret: b}\n")
    with pytest.raises(KeyError, match="unknown app 'default' \\(configured: shop\\)"):
        config.app(None)


# --------------------------------------------------------------------------- environment


def test_unset_env_var_names_key_and_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + "api_base: ${WX_API}\n")
    assert found == ["api_base: environment variable WX_API is not set "
                     "(set it, or write ${WX_API:-default})"]


def test_env_var_set(tmp_path: Path) -> None:
    config = load(tmp_path, APP + "api_base: https://${WX_HOST}/v1\n",
                  env={"WX_HOST": "proxy.example"})
    assert config.api_base == "https://proxy.example/v1"


def test_env_default(tmp_path: Path) -> None:
    text = APP + "log: {level: '${LEVEL:-warning}', format: '${FMT:-text}'}\n"
    assert load(tmp_path, text, env={}).log.level == "WARNING"
    # As in the shell, :- also applies to a set but empty variable.
    assert load(tmp_path, text, env={"LEVEL": ""}).log.level == "WARNING"
    config = load(tmp_path, text, env={"LEVEL": "error", "FMT": "json"})
    assert (config.log.level, config.log.format) == ("ERROR", "json")


def test_env_default_may_be_empty_and_contain_colons(tmp_path: Path) -> None:
    config = load(tmp_path, APP + "metrics: {listen: '${LISTEN:-0.0.0.0:9100}'}\n", env={})
    assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9100)
    config = load(tmp_path, APP + "api_base: 'https://api.weixin.qq.com${SUFFIX:-}'\n", env={})
    assert config.api_base == "https://api.weixin.qq.com"


def test_env_escape(tmp_path: Path) -> None:
    config = load(tmp_path, "apps:\n  default: {appid: wx1, secret: 'a$${b}c$$d'}\n", env={})
    assert config.app(None).secret == Secret("a${b}c$$d")


def test_malformed_references(tmp_path: Path) -> None:
    found = problems(tmp_path, APP + "api_base: ${WX API}\ntemplates: ${TEMPLATES\n", env={})
    assert found == [
        "api_base: malformed reference '${WX API}' (write ${NAME} or ${NAME:-default}, NAME made "
        "of letters, digits and _; nesting is not supported)",
        "templates: unterminated ${ (write ${NAME} or ${NAME:-default}; $${ for a literal ${)",
    ]


def test_env_numbers_are_accepted_but_quoted_numbers_in_the_file_are_not(tmp_path: Path
                                                                         ) -> None:
    text = APP + "dispatch: {workers: '${W:-32}', rate_limit: '${R:-1.5}', lease: '${L:-90}'}\n"
    config = load(tmp_path, text, env={})
    assert (config.dispatch.workers, config.dispatch.rate_limit, config.dispatch.lease) == (
        32, 1.5, 90.0)
    assert load(tmp_path, text, env={"W": "4"}).dispatch.workers == 4
    found = problems(tmp_path, text, env={"W": "many"})
    assert found == ["dispatch.workers: 'many' is not allowed (an integer from 1 to 256)"]


# --------------------------------------------------------------------------- secret_file


def test_secret_file_relative_to_config_folder(tmp_path: Path) -> None:
    (tmp_path / "wechat.secret").write_text(f"  {SECRET_VALUE}\n\n", encoding="utf-8")
    config = load(tmp_path, "apps:\n  default: {appid: wx1, secret_file: wechat.secret}\n",
                  env={})
    assert config.app(None).secret == Secret(SECRET_VALUE)  # stripped


def test_secret_file_prefers_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "wechat.secret").write_text("from-credentials\n", encoding="utf-8")
    (tmp_path / "wechat.secret").write_text("from-config-folder\n", encoding="utf-8")
    text = "apps:\n  default: {appid: wx1, secret_file: wechat.secret}\n"
    config = load(tmp_path, text, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.app(None).secret == Secret("from-credentials")
    # Not in the credentials directory: the config folder is used.
    (creds / "wechat.secret").unlink()
    config = load(tmp_path, text, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.app(None).secret == Secret("from-config-folder")


def test_secret_file_absolute_path(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "s"
    secret.parent.mkdir()
    secret.write_text("abs", encoding="utf-8")
    config = load(tmp_path, f"apps:\n  default: {{appid: wx1, secret_file: {secret}}}\n",
                  env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.app(None).secret == Secret("abs")


def test_secret_file_missing_or_empty(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    text = "apps:\n  default: {appid: wx1, secret_file: wechat.secret}\n"
    found = problems(tmp_path, text, env={"CREDENTIALS_DIRECTORY": str(creds)})
    folder = tmp_path.resolve()
    assert found == [f"apps.default.secret_file: 'wechat.secret' not found (looked for "
                     f"{creds}/wechat.secret and {folder}/wechat.secret)"]
    (tmp_path / "wechat.secret").write_text(" \n", encoding="utf-8")
    found = problems(tmp_path, text, env={})
    assert found == [f"apps.default.secret_file: 'wechat.secret' is empty "
                     f"({folder}/wechat.secret)"]


def test_secret_and_secret_file_together(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("x", encoding="utf-8")
    found = problems(tmp_path, f"apps:\n  default: {{appid: wx1, secret: {SECRET_VALUE}, "
                               "secret_file: s}\n")
    assert found == ["apps.default.secret_file: cannot be combined with apps.default.secret "
                     "(give exactly one of secret and secret_file)"]


# --------------------------------------------------------------------------- secrets never leak


def test_secret_wrapper() -> None:
    secret = Secret(SECRET_VALUE)
    assert str(secret) == repr(secret) == f"{secret}" == "<secret>"
    assert secret.reveal() == SECRET_VALUE
    assert secret == Secret(SECRET_VALUE)
    assert secret != Secret("other")
    assert secret != SECRET_VALUE  # never equal to the bare string
    assert hash(secret) == hash(Secret(SECRET_VALUE))
    assert len({secret, Secret(SECRET_VALUE)}) == 1
    with pytest.raises(AttributeError):
        secret._value = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_secret_never_in_messages_or_repr(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"\xff" + SECRET_VALUE.encode())
    text = f"""
apps:
  default: {{appid: wx1, secret: {SECRET_VALUE}, secret_file: s}}
  shop: {{appid: wx2, secret: [{SECRET_VALUE}]}}
  blog: {{appid: wx3, secret: "${{BAD NAME:-{SECRET_VALUE}}}"}}
  news: {{appid: wx4, secret_file: s}}
retry: [{{secret: {SECRET_VALUE}}}]
"""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    error = caught.value
    assert len(error.problems) == 5
    assert "apps.shop.secret: <secret> is not a string (quote it in YAML)" in error.problems
    assert "apps.blog.secret: malformed reference (write" in "\n".join(error.problems)
    for shown in (str(error), repr(error), *error.problems):
        assert SECRET_VALUE not in shown
        assert "\\xff" not in shown
    config = load(tmp_path, f"apps:\n  default: {{appid: wx1, secret: {SECRET_VALUE}}}\n")
    assert SECRET_VALUE not in repr(config)
    assert SECRET_VALUE not in str(config)
    assert SECRET_VALUE not in repr(config.apps)


def test_secret_not_in_yaml_syntax_error(tmp_path: Path) -> None:
    found = problems(tmp_path, f"apps:\n  default:\n    secret: {SECRET_VALUE}: oops\n")
    assert SECRET_VALUE not in "\n".join(found)


def test_database_password_masked(tmp_path: Path) -> None:
    config = from_dict({"database": "postgresql://herald:pa55word@db/herald"}, tmp_path)
    assert config.database == "postgresql://herald:pa55word@db/herald"  # usable as is
    assert "pa55word" not in repr(config)
    assert "postgresql://herald:***@db/herald" in repr(config)
    found = dict_problems({"database": "postgresql://herald:pa55word@db:99999/herald"}, tmp_path)
    assert found == ["database: 'postgresql://herald:***@db:99999/herald' has an invalid port"]


# --------------------------------------------------------------------------- database


def test_relative_sqlite_path_resolved(tmp_path: Path) -> None:
    config = from_dict({"database": "sqlite:///data/herald.db"}, tmp_path)
    assert config.database == f"sqlite:////{str(tmp_path.resolve()).lstrip('/')}/data/herald.db"
    config = from_dict({"database": "sqlite+pool:///../q.db?timeout=5"}, tmp_path / "etc")
    assert config.database == f"sqlite+pool:///{tmp_path.resolve()}/q.db?timeout=5"


def test_absolute_sqlite_path_kept(tmp_path: Path) -> None:
    config = from_dict({"database": "sqlite:////var/lib/herald/q.db"}, tmp_path)
    assert config.database == "sqlite:////var/lib/herald/q.db"


@pytest.mark.parametrize("url", ["postgres://h/db", "postgresql://u@h:5432/db", "mysql://u@h/db",
                                 "mysql+pool://u@h/db?max_connections=8"])
def test_server_database_urls_kept(tmp_path: Path, url: str) -> None:
    assert from_dict({"database": url}, tmp_path).database == url


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite:///:memory:", "is not a database file"),
    ("sqlite://", "names a host"),
    ("sqlite:///", "is not a database file"),
    ("sqlite://herald.db", "names a host"),
    ("oracle://u@h/db", "has an unsupported scheme 'oracle' (allowed schemes: sqlite, postgres, "
                        "postgresql, mysql, each optionally +pool)"),
    ("mysql+async://u@h/db", "has an unsupported scheme 'mysql+async'"),
    ("herald.db", "is not a database URL"),
    ("postgresql://u@h", "names no database"),
])
def test_bad_database(tmp_path: Path, url: str, message: str) -> None:
    found = dict_problems({"database": url}, tmp_path)
    assert len(found) == 1
    assert found[0].startswith(f"database: {url!r} {message}")


def test_herald_database_overrides(tmp_path: Path) -> None:
    env = {**ENV, "HERALD_DATABASE": "mysql://herald@db/queue"}
    config = load(tmp_path, "database: sqlite:///local.db\n", env=env)
    assert config.database == "mysql://herald@db/queue"
    # Relative SQLite in the override also resolves against the config folder.
    env["HERALD_DATABASE"] = "sqlite:///other.db"
    config = load(tmp_path, "database: ${UNSET_VAR}\n", env=env)
    assert config.database == f"sqlite:///{tmp_path.resolve()}/other.db"
    env["HERALD_DATABASE"] = "sqlite:///:memory:"
    found = problems(tmp_path, "", env=env)
    assert found[0].startswith("database (from HERALD_DATABASE): 'sqlite:///:memory:' is not a "
                               "database file")


# --------------------------------------------------------------------------- other keys


def test_api_base(tmp_path: Path) -> None:
    assert from_dict({"api_base": "https://api.weixin.qq.com///"}, tmp_path).api_base == (
        "https://api.weixin.qq.com")
    for bad in ("ftp://x", "api.weixin.qq.com", "https://", "https://x?y=1", 5):
        found = dict_problems({"api_base": bad}, tmp_path)
        assert len(found) == 1 and found[0].startswith("api_base: ")
        assert "is not allowed (an http or https URL" in found[0]


def test_templates_path(tmp_path: Path) -> None:
    assert from_dict({"templates": "/etc/herald/t.yaml"}, tmp_path).templates == Path(
        "/etc/herald/t.yaml")
    assert from_dict({"templates": Path("t.yaml")}, tmp_path).templates == (
        tmp_path.resolve() / "t.yaml")
    assert dict_problems({"templates": ""}, tmp_path) == ["templates: '' is not a file path"]


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:9464", "127.0.0.1", 9464), ("0.0.0.0:9100", "0.0.0.0", 9100),
    ("localhost:0", "localhost", 0), ("[::]:65535", "::", 65535),
    ("metrics.internal:80", "metrics.internal", 80),
])
def test_metrics_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    metrics = from_dict({"metrics": {"listen": listen}}, tmp_path).metrics
    assert (metrics.listen, metrics.host, metrics.port) == (listen, host, port)


def test_metrics_disabled(tmp_path: Path) -> None:
    metrics = load(tmp_path, "metrics:\n  listen: null\n").metrics
    assert (metrics.listen, metrics.host, metrics.port) == (None, None, None)


@pytest.mark.parametrize("listen", ["9464", 9464, ":9464", "host:70000", "::1:9464", "[zz]:1",
                                    "999.1.1.1:80", "host:-1", "ho st:80", "host:"])
def test_bad_metrics_listen(tmp_path: Path, listen: object) -> None:
    found = dict_problems({"metrics": {"listen": listen}}, tmp_path)
    assert found == [f"metrics.listen: {listen!r} is not allowed (host:port with port 0..65535, "
                     "e.g. 127.0.0.1:9464 or [::1]:9464; null disables metrics)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("00:00+08:00", QuotaReset(0, 0, 480)), ("23:59-05:30", QuotaReset(23, 59, -330)),
    ("12:30+00:00", QuotaReset(12, 30, 0)), ("00:00+14:00", QuotaReset(0, 0, 840)),
])
def test_daily_quota_reset_parsing(tmp_path: Path, text: str, expected: QuotaReset) -> None:
    config = from_dict({"retry": {"daily_quota_reset": text}}, tmp_path)
    assert config.retry.daily_quota_reset == expected
    assert str(config.retry.daily_quota_reset) == text


@pytest.mark.parametrize("text", ["8:00+08:00", "24:00+00:00", "00:60+00:00", "00:00",
                                  "00:00+15:00", "00:00Z", "midnight"])
def test_bad_daily_quota_reset(tmp_path: Path, text: str) -> None:
    found = dict_problems({"retry": {"daily_quota_reset": text}}, tmp_path)
    assert len(found) == 1
    assert found[0].startswith(f"retry.daily_quota_reset: {text!r} is not allowed (HH:MM "
                               "followed by a UTC offset")


def test_unquoted_time_in_yaml_hints_at_quoting(tmp_path: Path) -> None:
    # YAML 1.1 reads an unquoted 8:00 as the sexagesimal integer 480.
    found = problems(tmp_path, APP + "retry: {daily_quota_reset: 8:00}\n")
    assert len(found) == 1
    assert found[0].startswith("retry.daily_quota_reset: 480 is not allowed")
    assert found[0].endswith("quote it in YAML)")


# --------------------------------------------------------------------------- immutability


def test_immutability(tmp_path: Path) -> None:
    config = load(tmp_path, APP)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.database = "sqlite:///other.db"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dispatch.workers = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.app(None).appid = "wxother"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.retry.backoff.base = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.apps["evil"] = config.app(None)  # type: ignore[index]
    with pytest.raises(TypeError):
        del config.apps["default"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        config.jobs["purge"] = config.jobs["dispatch"]  # type: ignore[index]
    with pytest.raises((AttributeError, TypeError)):
        config.extra = 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- errors


def test_multiple_problems_collected(tmp_path: Path) -> None:
    path = write(tmp_path, """
wokers: 4
apps:
  default: {secret: x}
dispatch: {on_stale: maybe, batch_size: 0}
http: {timeout: 0}
log: {level: loud}
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    error = caught.value
    assert len(error.problems) == 6
    assert error.path == str(path.resolve())
    assert str(error) == f"invalid configuration in {path.resolve()}:\n  - " + "\n  - ".join(
        error.problems)
    keys = [problem.split(":")[0] for problem in error.problems]
    assert keys == ["wokers", "apps.default.appid", "dispatch.batch_size", "dispatch.on_stale",
                    "http.timeout", "log.level"]


def test_config_error_pickles() -> None:
    error = ConfigError(["a: b", "c: d"], "/etc/herald/config.yaml")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.problems, copy.path, str(copy)) == (error.problems, error.path, str(error))
    assert ConfigError("x: y").problems == ["x: y"]


def test_yaml_syntax_error_mentions_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "log:\n  level: INFO\n  format: [text\n")
    assert len(found) == 1
    assert "YAML syntax error" in found[0]
    assert found[0].startswith("line ")
    found = problems(tmp_path, "dispatch:\n  workers: 4\n workers: 5\n")
    assert found[0].startswith("line 3, column 2: YAML syntax error")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    found = problems(tmp_path, "dispatch:\n  workers: 4\n  lease: 1m\n  workers: 8\n")
    assert found == ["line 4, column 3: YAML syntax error: duplicate key 'workers' "
                     "(first given on line 2)"]
    # Merge keys may be overridden on purpose.
    config = load(tmp_path, APP + "retention: {<<: {success: 1d}, success: 2d}\n")
    assert config.retention.success == 2 * 86400.0


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=ENV)
    assert caught.value.problems == [f"config file {path.resolve()} not found"]
    assert f"config file {path.resolve()} not found" in str(caught.value)


def test_path_from_herald_config_env(tmp_path: Path) -> None:
    path = write(tmp_path, APP, name="herald.yaml")
    config = load_config(env={"HERALD_CONFIG": str(path)})
    assert config.path == path.resolve()


def test_path_defaults_to_cwd_config_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    write(tmp_path, APP)
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.path == (tmp_path / "config.yaml").resolve()
    assert config.database == f"sqlite:///{tmp_path.resolve()}/herald.db"


def test_config_from_dict_accepts_objects_from_code(tmp_path: Path) -> None:
    # The demo builds its config in code: paths and Secret objects are fine there.
    config = config_from_dict(
        {"apps": {"default": {"appid": "wxdemo", "secret": Secret("demo")}},
         "templates": tmp_path / "t.yaml", "database": f"sqlite:///{tmp_path}/demo.db"},
        base_dir=tmp_path, env={}, path=None)
    assert config.app(None).secret == Secret("demo")
    assert config.templates == tmp_path.resolve() / "t.yaml"


# --------------------------------------------------------------------------- QuotaReset


BEIJING_MIDNIGHT = QuotaReset(0, 0, 480)


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_next_after_before_reset_same_day() -> None:
    reset = QuotaReset(9, 30, 0)
    assert reset.next_after(utc(2024, 5, 1, 8, 0)) == utc(2024, 5, 1, 9, 30)


def test_next_after_after_reset_same_day() -> None:
    reset = QuotaReset(9, 30, 0)
    assert reset.next_after(utc(2024, 5, 1, 10, 0)) == utc(2024, 5, 2, 9, 30)


def test_next_after_is_strictly_after() -> None:
    reset = QuotaReset(9, 30, 0)
    assert reset.next_after(utc(2024, 5, 1, 9, 30)) == utc(2024, 5, 2, 9, 30)
    assert reset.next_after(utc(2024, 5, 1, 9, 29, 59)) == utc(2024, 5, 1, 9, 30)


def test_next_after_across_midnight_and_month_end() -> None:
    reset = QuotaReset(0, 0, 0)
    assert reset.next_after(utc(2024, 12, 31, 23, 59)) == utc(2025, 1, 1, 0, 0)
    assert reset.next_after(utc(2024, 2, 28, 12, 0)) == utc(2024, 2, 29, 0, 0)


def test_next_after_beijing_midnight_is_1600_utc_previous_day() -> None:
    # 00:00+08:00 on 2 May is 16:00 UTC on 1 May.
    assert BEIJING_MIDNIGHT.next_after(utc(2024, 5, 1, 15, 0)) == utc(2024, 5, 1, 16, 0)
    assert BEIJING_MIDNIGHT.next_after(utc(2024, 5, 1, 16, 0)) == utc(2024, 5, 2, 16, 0)
    assert BEIJING_MIDNIGHT.next_after(utc(2024, 5, 1, 23, 0)) == utc(2024, 5, 2, 16, 0)
    assert BEIJING_MIDNIGHT.next_after(utc(2024, 5, 2, 0, 30)) == utc(2024, 5, 2, 16, 0)


def test_next_after_negative_offset() -> None:
    reset = QuotaReset(23, 0, -300)  # 23:00-05:00 is 04:00 UTC the next day
    assert reset.next_after(utc(2024, 5, 1, 3, 0)) == utc(2024, 5, 1, 4, 0)
    assert reset.next_after(utc(2024, 5, 1, 5, 0)) == utc(2024, 5, 2, 4, 0)


def test_next_after_returns_aware_utc_for_any_aware_input() -> None:
    tokyo = timezone(timedelta(hours=9))
    result = BEIJING_MIDNIGHT.next_after(datetime(2024, 5, 2, 0, 30, tzinfo=tokyo))
    assert result == utc(2024, 5, 1, 16, 0)
    assert result.tzinfo is UTC
    with pytest.raises(ValueError):
        BEIJING_MIDNIGHT.next_after(datetime(2024, 5, 1, 12, 0))
