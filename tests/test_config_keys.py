"""config/: the keys the push receiver, channels and console need (apps.kind, apps.push,
web, console, grants, receipts, sms, log.sql, retention forever/events, jobs.events)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from config import Config, ConfigError, PushConfig, Secret, config_from_dict, load_config

APPID = "wx0123456789abcdef"
ENV = {"WECHAT_APPID": APPID, "WECHAT_SECRET": "app-secret-VALUE"}
# Values that must never appear in a message, a repr or an exception.
PUSH_TOKEN = "PushTok3nNeverShown"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")
SMS_SECRET_ID = "AKIDneverShown0123456789"
SMS_SECRET_KEY = "sms-key-NEVER-shown"
CALLBACK = "cb_token-NEVER-shown-42"
HASH = "scrypt$16384$8$1$c2FsdA$aGFzaE5FVkVSc2hvd24"
SECRETS = (PUSH_TOKEN, AES_KEY, SMS_SECRET_ID, SMS_SECRET_KEY, CALLBACK, HASH)
SMS = {"secret_id": SMS_SECRET_ID, "secret_key": SMS_SECRET_KEY, "sdk_app_id": "1400006666",
       "sign_name": "某某商城"}


def build(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    return config_from_dict(data, base_dir=tmp_path, env=ENV if env is None else env)


def problems(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
             ) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build(data, tmp_path, env)
    text = f"{caught.value}\n{caught.value!r}"
    for value in SECRETS:
        assert value not in text
    return caught.value.problems


def app(**extra: Any) -> dict[str, Any]:
    return {"apps": {"default": {"appid": APPID, "secret": "x", **extra}}}


def load_yaml(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=ENV if env is None else env)


def assert_hidden(config: Config) -> None:
    for shown in (repr(config), str(config)):
        for value in SECRETS:
            assert value not in shown


# --------------------------------------------------------------------------- defaults


def test_new_defaults(tmp_path: Path) -> None:
    config = build({}, tmp_path)
    assert config.app(None).kind == "miniprogram"
    assert config.app(None).push is None
    assert (config.web.listen, config.web.host, config.web.port) == (
        "127.0.0.1:8080", "127.0.0.1", 8080)
    console = config.console
    assert (console.listen, console.host, console.port) == ("127.0.0.1:9465", "127.0.0.1", 9465)
    assert dict(console.users) == {}
    assert (console.session_ttl, console.cookie_secure) == (12 * 3600.0, False)
    assert config.grants.on_missing == "send"
    assert config.receipts.missing_after == 1800.0
    assert config.sms is None
    assert config.log.sql is False
    assert config.retention.events == 30 * 86400.0
    assert config.jobs["events"].every == 5.0


# --------------------------------------------------------------------------- apps.kind


def test_app_kind(tmp_path: Path) -> None:
    assert build(app(kind="official_account"), tmp_path).app(None).kind == "official_account"
    assert problems(app(kind="oa"), tmp_path) == [
        "apps.default.kind: 'oa' is not allowed (allowed: miniprogram, official_account)"]
    assert problems(app(kind=None), tmp_path) == [
        "apps.default.kind: null is not allowed (allowed: miniprogram, official_account)"]


# --------------------------------------------------------------------------- apps.push


def test_push_inline(tmp_path: Path) -> None:
    config = build(app(push={"token": PUSH_TOKEN, "aes_key": AES_KEY}), tmp_path)
    push = config.app(None).push
    assert push is not None
    assert push.token == Secret(PUSH_TOKEN)
    assert push.aes_key is not None and push.aes_key.reveal() == AES_KEY
    assert_hidden(config)


def test_push_plaintext_mode_and_null(tmp_path: Path) -> None:
    push = build(app(push={"token": "abc"}), tmp_path).app(None).push
    assert push is not None and push.aes_key is None
    assert build(app(push={"token": "abc", "aes_key": None}), tmp_path).app(None).push == push
    assert build(app(push=None), tmp_path).app(None).push is None


def test_push_from_files_prefers_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "push_token").write_text(PUSH_TOKEN + "\n", encoding="utf-8")
    (tmp_path / "push_aes").write_text(AES_KEY, encoding="utf-8")
    config = build(app(push={"token_file": "push_token", "aes_key_file": "push_aes"}), tmp_path,
                   env={**ENV, "CREDENTIALS_DIRECTORY": str(creds)})
    push = config.app(None).push
    assert push is not None
    assert push.token == Secret(PUSH_TOKEN)
    assert push.aes_key == Secret(AES_KEY)


def test_push_needs_a_token(tmp_path: Path) -> None:
    assert problems(app(push={"aes_key": AES_KEY}), tmp_path) == [
        "apps.default.push.token: missing (required: the push Token from the console "
        "(3 to 32 letters or digits); or token_file)"]
    assert problems(app(push={}), tmp_path)[0].startswith("apps.default.push.token: missing")


@pytest.mark.parametrize("token", ["ab", "x" * 33, "tok-en", "tok en", "令牌令牌"])
def test_bad_push_token(tmp_path: Path, token: str) -> None:
    assert problems(app(push={"token": token}), tmp_path) == [
        "apps.default.push.token: <secret> is not a valid push Token "
        "(allowed: 3 to 32 letters or digits, as set in the console)"]


@pytest.mark.parametrize("key", [
    AES_KEY[:-1],  # 42 characters
    AES_KEY + "A",  # 44
    AES_KEY[:-1] + "=",  # padding is not part of it
    AES_KEY[:-1] + "-",  # URL-safe alphabet is not WeChat's
    "",
])
def test_bad_aes_key(tmp_path: Path, key: str) -> None:
    found = problems(app(push={"token": "abc", "aes_key": key}), tmp_path)
    if key:
        assert found == [
            "apps.default.push.aes_key: <secret> is not a valid EncodingAESKey (allowed: "
            "exactly 43 characters of A-Z, a-z, 0-9, + and /, as the console generates it)"]
    else:
        assert found == ["apps.default.push.aes_key: empty value (give the EncodingAESKey, "
                         "or use aes_key_file)"]
    if key:
        assert all(key not in shown for shown in found)


def test_bad_push_secret_in_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("no!", encoding="utf-8")
    found = problems(app(push={"token_file": "tok"}), tmp_path)
    assert found == [f"apps.default.push.token_file: 'tok' ({tmp_path.resolve()}/tok): its "
                     "content is not a valid push Token (allowed: 3 to 32 letters or digits, "
                     "as set in the console)"]
    found = problems(app(push={"token": "abc", "aes_key_file": "nope"}), tmp_path)
    assert found == [f"apps.default.push.aes_key_file: 'nope' not found (looked for "
                     f"{tmp_path.resolve()}/nope)"]


def test_push_value_and_file_together(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text(PUSH_TOKEN, encoding="utf-8")
    found = problems(app(push={"token": PUSH_TOKEN, "token_file": "tok"}), tmp_path)
    assert found == ["apps.default.push.token_file: cannot be combined with "
                     "apps.default.push.token (give exactly one of token and token_file)"]


def test_push_shape(tmp_path: Path) -> None:
    assert problems(app(push="on"), tmp_path) == [
        "apps.default.push: 'on' is not a mapping (allowed keys: token, token_file, aes_key, "
        "aes_key_file)"]
    assert problems(app(push={"token": "abc", "aes": AES_KEY}), tmp_path) == [
        "apps.default.push.aes: unknown key, did you mean 'aes_key'? "
        "(allowed: token, token_file, aes_key, aes_key_file)"]


def test_push_secrets_interpolated_and_never_shown(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, "apps:\n  default:\n    appid: wx1\n    secret: x\n"
                                 "    push: {token: '${PUSH}', aes_key: '${AES}'}\n",
                       env={"PUSH": PUSH_TOKEN, "AES": AES_KEY})
    assert config.app(None).push == PushConfig(Secret(PUSH_TOKEN), Secret(AES_KEY))
    assert_hidden(config)
    with pytest.raises(ConfigError) as caught:
        load_yaml(tmp_path, "apps:\n  default:\n    appid: wx1\n    secret: x\n"
                            f"    push: {{token: '${{BAD NAME:-{PUSH_TOKEN}}}'}}\n")
    assert PUSH_TOKEN not in str(caught.value)
    assert caught.value.problems[0].startswith("apps.default.push.token: malformed reference (")


# --------------------------------------------------------------------------- web


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("127.0.0.1:8081", "127.0.0.1", 8081), ("[::1]:80", "::1", 80), ("localhost:0", "localhost", 0),
])
def test_web_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    web = build({"web": {"listen": listen}}, tmp_path).web
    assert (web.listen, web.host, web.port) == (listen, host, port)


def test_web_disabled_and_bad(tmp_path: Path) -> None:
    web = build({"web": {"listen": None}}, tmp_path).web
    assert (web.listen, web.host, web.port) == (None, None, None)
    assert problems({"web": {"listen": "8080"}}, tmp_path) == [
        "web.listen: '8080' is not allowed (host:port with port 0..65535, e.g. 127.0.0.1:8080 "
        "or [::1]:8080; null disables the push receiver)"]
    assert problems({"web": {"port": 8080}}, tmp_path) == [
        "web.port: unknown key (allowed: listen, push_max_age)"]


def test_web_push_max_age(tmp_path: Path) -> None:
    assert build({}, tmp_path).web.push_max_age == 300.0  # the default, 5m
    assert build({"web": {"push_max_age": "90s"}}, tmp_path).web.push_max_age == 90.0
    for bad in ("1s", "2d", "soon"):
        [problem] = problems({"web": {"push_max_age": bad}}, tmp_path)
        assert problem.startswith("web.push_max_age: "), problem


# --------------------------------------------------------------------------- console


def test_console_users(tmp_path: Path) -> None:
    config = build({"console": {"users": {
        "ann": {"password_hash": HASH, "role": "operator"},
        "bob.lee": {"password_hash": HASH},
    }, "session_ttl": "8h", "cookie_secure": True}}, tmp_path)
    users = config.console.users
    assert list(users) == ["ann", "bob.lee"]
    assert users["ann"].name == "ann" and users["ann"].role == "operator"
    assert users["bob.lee"].role == "viewer"  # the least a user can be
    assert users["ann"].password_hash == Secret(HASH)
    assert (config.console.session_ttl, config.console.cookie_secure) == (8 * 3600.0, True)
    assert_hidden(config)
    with pytest.raises(TypeError):
        config.console.users["eve"] = users["ann"]  # type: ignore[index]


def test_console_disabled(tmp_path: Path) -> None:
    console = build({"console": {"listen": None}}, tmp_path).console
    assert (console.listen, console.host, console.port) == (None, None, None)


@pytest.mark.parametrize("name", ["Ann", "1ann", "_ann", "a" * 33, "ann lee", "änn"])
def test_bad_console_user_names(tmp_path: Path, name: str) -> None:
    found = problems({"console": {"users": {name: {"password_hash": HASH}}}}, tmp_path)
    assert found == [f"console.users.{name}: {name!r} is not a valid user name (allowed: a "
                     "lowercase letter, then up to 31 lowercase letters, digits, _, . or -)"]


def test_bad_console_users(tmp_path: Path) -> None:
    found = problems({"console": {"users": {
        "ann": {"password_hash": "md5$" + HASH[7:]},
        "bob": {"role": "admin"},
        "cid": {"password_hash": HASH, "pasword_hash": HASH},
        "dan": "secret",
    }}}, tmp_path)
    assert found == [
        "console.users.ann.password_hash: <secret> is not a valid password hash (allowed: the "
        "scrypt$... line that `herald console-password` prints)",
        "console.users.bob.password_hash: missing (required: what `herald "
        "console-password` prints (scrypt$...))",
        "console.users.bob.role: 'admin' is not allowed (allowed: viewer, operator)",
        "console.users.cid.pasword_hash: unknown key, did you mean 'password_hash'? "
        "(allowed: password_hash, role)",
        "console.users.dan: 'secret' is not a mapping (allowed keys: password_hash, role)",
        "console.users.dan.password_hash: missing (required: what `herald "
        "console-password` prints (scrypt$...))",
    ]
    assert problems({"console": {"users": ["ann"]}}, tmp_path) == [
        "console.users: a list is not a mapping of user name to settings"]


@pytest.mark.parametrize(("value", "message"), [
    ("30s", "'30s' is too short (must be at least 1m)"),
    ("31d", "'31d' is too long (must be at most 30d)"),
    ("soon", "'soon' is not a duration (use 90s, 5m, 1h, 30d or a number of seconds)"),
])
def test_bad_session_ttl(tmp_path: Path, value: str, message: str) -> None:
    assert problems({"console": {"session_ttl": value}}, tmp_path) == [
        f"console.session_ttl: {message}"]


def test_cookie_secure(tmp_path: Path) -> None:
    for bad, shown in (("yes", "'yes'"), (1, "1"), (None, "null")):
        assert problems({"console": {"cookie_secure": bad}}, tmp_path) == [
            f"console.cookie_secure: {shown} is not allowed (true or false)"]
    # From the environment a bool is text; true/false in any case is understood.
    config = load_yaml(tmp_path, "console: {cookie_secure: '${SECURE:-TRUE}'}\n")
    assert config.console.cookie_secure is True
    config = load_yaml(tmp_path, "console: {cookie_secure: yes}\n")  # YAML 1.1's yes
    assert config.console.cookie_secure is True


# --------------------------------------------------------------------------- grants, receipts


@pytest.mark.parametrize("value", ["send", "hold", "fail"])
def test_grants_on_missing(tmp_path: Path, value: str) -> None:
    assert build({"grants": {"on_missing": value}}, tmp_path).grants.on_missing == value


def test_bad_grants_and_receipts(tmp_path: Path) -> None:
    assert problems({"grants": {"on_missing": "drop"}, "receipts": {"missing_after": "10s"}},
                    tmp_path) == [
        "grants.on_missing: 'drop' is not allowed (allowed: send, hold, fail)",
        "receipts.missing_after: '10s' is too short (must be at least 1m)",
    ]
    assert problems({"receipts": {"missing_after": "31d"}}, tmp_path) == [
        "receipts.missing_after: '31d' is too long (must be at most 30d)"]


def test_receipts_missing_after(tmp_path: Path) -> None:
    assert build({"receipts": {"missing_after": "2h"}}, tmp_path).receipts.missing_after == 7200.0


# --------------------------------------------------------------------------- sms


def test_sms(tmp_path: Path) -> None:
    config = build({"sms": {**SMS, "callback_token": CALLBACK,
                            "endpoint": "http://127.0.0.1:8099/"}}, tmp_path)
    sms = config.sms
    assert sms is not None
    assert (sms.secret_id, sms.secret_key) == (Secret(SMS_SECRET_ID), Secret(SMS_SECRET_KEY))
    assert (sms.sdk_app_id, sms.sign_name, sms.region) == ("1400006666", "某某商城",
                                                           "ap-guangzhou")
    assert sms.endpoint == "http://127.0.0.1:8099"
    assert sms.callback_token == Secret(CALLBACK)
    assert_hidden(config)


def test_sms_defaults_and_int_app_id(tmp_path: Path) -> None:
    sms = build({"sms": {**SMS, "sdk_app_id": 1400006666, "region": "ap-hongkong"}},
                tmp_path).sms
    assert sms is not None
    assert (sms.sdk_app_id, sms.region) == ("1400006666", "ap-hongkong")
    assert sms.endpoint == "https://sms.tencentcloudapi.com"
    assert sms.callback_token is None
    assert build({"sms": None}, tmp_path).sms is None


def test_sms_secret_key_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sms_key").write_text(SMS_SECRET_KEY, encoding="utf-8")
    data = {"sms": {**{k: v for k, v in SMS.items() if k != "secret_key"},
                    "secret_key_file": "sms_key"}}
    sms = build(data, tmp_path, env={**ENV, "CREDENTIALS_DIRECTORY": str(creds)}).sms
    assert sms is not None and sms.secret_key == Secret(SMS_SECRET_KEY)
    found = problems({"sms": {**SMS, "secret_key_file": "sms_key"}}, tmp_path)
    assert found == ["sms.secret_key_file: cannot be combined with sms.secret_key "
                     "(give exactly one of secret_key and secret_key_file)"]


def test_sms_required_keys(tmp_path: Path) -> None:
    assert problems({"sms": {}}, tmp_path) == [
        "sms.secret_id: missing (required: the API key's SecretId (Tencent Cloud CAM console))",
        "sms.secret_key: missing (required: the API key's SecretKey; or secret_key_file)",
        "sms.sdk_app_id: missing (required: the SMS application's SdkAppId, e.g. "
        "\"1400006666\")",
        "sms.sign_name: missing (required: the approved signature (签名), e.g. 某某商城; a "
        "template may override it)",
    ]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("sdk_app_id", "14000x", "'14000x' is not a valid SdkAppId (allowed: 1 to 20 digits, "
                             "e.g. \"1400006666\")"),
    ("sdk_app_id", -1, "-1 is not a valid SdkAppId (allowed: 1 to 20 digits, "
                       "e.g. \"1400006666\")"),
    ("sdk_app_id", 1.5, "1.5 is not a valid SdkAppId (allowed: 1 to 20 digits, "
                        "e.g. \"1400006666\")"),
    ("sign_name", "", "'' is not a valid sign name (allowed: 1 to 32 characters on one line, "
                      "e.g. 某某商城)"),
    ("sign_name", "某某\n商城", "'某某\\n商城' is not a valid sign name (allowed: 1 to 32 "
                             "characters on one line, e.g. 某某商城)"),
    ("sign_name", "商" * 33, f"{'商' * 33!r} is not a valid sign name (allowed: 1 to 32 "
                            "characters on one line, e.g. 某某商城)"),
    ("sign_name", 12, "12 is not a string (quote it in YAML)"),
    ("region", "Guangzhou", "'Guangzhou' is not a valid region (allowed: a Tencent Cloud "
                            "region such as ap-guangzhou)"),
    ("endpoint", "sms.tencentcloudapi.com", "'sms.tencentcloudapi.com' is not allowed (an http "
                                            "or https URL without query, e.g. "
                                            "https://sms.tencentcloudapi.com)"),
    ("endpoint", "https://u:pw@sms.example/?x=1", "'https://u:***@sms.example/?x=1' is not "
                                                  "allowed (an http or https URL without "
                                                  "query, e.g. https://sms.tencentcloudapi.com)"),
    ("callback_token", "short", "<secret> is not a valid callback token (allowed: 16 to 128 "
                                "letters, digits, _ or -)"),
    ("callback_token", "x" * 15 + "/", "<secret> is not a valid callback token (allowed: 16 to "
                                       "128 letters, digits, _ or -)"),
    ("secret_id", "AKID with space", "<secret> is not a valid SecretId (allowed: letters and "
                                     "digits, e.g. AKID...)"),
    ("secret_key", ["k"], "<secret> is not a string (quote it in YAML)"),
])
def test_bad_sms(tmp_path: Path, key: str, value: object, message: str) -> None:
    assert problems({"sms": {**SMS, key: value}}, tmp_path) == [f"sms.{key}: {message}"]


def test_sms_shape(tmp_path: Path) -> None:
    assert problems({"sms": "tencent"}, tmp_path) == [
        "sms: 'tencent' is not a mapping (allowed keys: secret_id, secret_key, secret_key_file, "
        "sdk_app_id, sign_name, region, endpoint, callback_token)"]


# --------------------------------------------------------------------------- log.sql, retention


def test_log_sql(tmp_path: Path) -> None:
    assert build({"log": {"sql": True}}, tmp_path).log.sql is True
    assert problems({"log": {"sql": "on"}}, tmp_path) == [
        "log.sql: 'on' is not allowed (true or false)"]


def test_retention_forever_and_events(tmp_path: Path) -> None:
    retention = build({"retention": {"success": "forever", "events": "7d"}}, tmp_path).retention
    assert retention == type(retention)(success=None, fail=90 * 86400.0,
                                        cancelled=30 * 86400.0, events=7 * 86400.0)
    assert build({"retention": {"events": "forever"}}, tmp_path).retention.events is None
    assert problems({"retention": {"fail": "never", "events": 0}}, tmp_path) == [
        "retention.fail: 'never' is not a duration (use 90s, 5m, 1h, 30d, a number of seconds "
        "or forever)",
        "retention.events: 0 must be greater than 0",
    ]


def test_jobs_events(tmp_path: Path) -> None:
    assert build({"jobs": {"events": {"every": "1s"}}}, tmp_path).jobs["events"].every == 1.0
    assert problems({"jobs": {"events": {"every": "often"}}}, tmp_path) == [
        "jobs.events.every: 'often' is not a duration (use 90s, 5m, 1h, 30d or a number of "
        "seconds)"]


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(("data", "message"), [
    ({"consle": {}}, "consle: unknown key, did you mean 'console'?"),
    ({"recipts": {}}, "recipts: unknown key, did you mean 'receipts'?"),
    ({"grant": {}}, "grant: unknown key, did you mean 'grants'?"),
    ({"smss": None}, "smss: unknown key, did you mean 'sms'?"),
    ({"web": {"listn": None}}, "web.listn: unknown key, did you mean 'listen'? (allowed: "
                               "listen, push_max_age)"),
    ({"console": {"usres": {}}}, "console.usres: unknown key, did you mean 'users'? (allowed: "
                                 "listen, users, session_ttl, cookie_secure)"),
    ({"console": {"cookie_secur": True}}, "console.cookie_secur: unknown key, did you mean "
                                          "'cookie_secure'?"),
    ({"console": {"users": {"ann": {"password_hash": HASH, "rol": "viewer"}}}},
     "console.users.ann.rol: unknown key, did you mean 'role'? (allowed: password_hash, role)"),
    ({"grants": {"on_mising": "send"}}, "grants.on_mising: unknown key, did you mean "
                                        "'on_missing'? (allowed: on_missing)"),
    ({"receipts": {"missing": "1h"}}, "receipts.missing: unknown key, did you mean "
                                      "'missing_after'? (allowed: missing_after)"),
    ({"sms": {**SMS, "secret_kye": "x"}}, "sms.secret_kye: unknown key, did you mean "
                                          "'secret_key'?"),
    ({"sms": {**SMS, "sign": "x"}}, "sms.sign: unknown key"),
    (app(psuh={}), "apps.default.psuh: unknown key, did you mean 'push'?"),
    (app(knd="miniprogram"), "apps.default.knd: unknown key, did you mean 'kind'?"),
    ({"log": {"sq": True}}, "log.sq: unknown key, did you mean 'sql'? "
                            "(allowed: format, level, sql)"),
    ({"retention": {"event": "1d"}}, "retention.event: unknown key, did you mean 'events'? "
                                     "(allowed: success, fail, cancelled, events)"),
    ({"jobs": {"event": {"every": 1}}}, "jobs.event: unknown key, did you mean 'events'?"),
])
def test_did_you_mean_in_new_sections(tmp_path: Path, data: dict[str, Any], message: str
                                      ) -> None:
    found = problems(data, tmp_path)
    assert len(found) == 1
    assert found[0].startswith(message)
