"""config/: limits on every value, checks across keys, warnings, deferred credentials,
and the schema kept in step with config.yaml and the dataclasses."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from config import Config, ConfigError, config_from_dict, load_config
from config.schema import SCHEMA
from config.spec import Node, Section
from config.values import Duration, Integer, Number

ENV = {"WECHAT_APPID": "wx0123456789abcdef", "WECHAT_SECRET": "app-secret-VALUE"}


def build(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None,
          **options: Any) -> Config:
    return config_from_dict(data, base_dir=tmp_path, env=ENV if env is None else env, **options)


def problems(data: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None,
             **options: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build(data, tmp_path, env, **options)
    return caught.value.problems


def nested(dotted: str, value: object) -> dict[str, Any]:
    """{"a": {"b": value}} for "a.b"."""
    data: Any = value
    for part in reversed(dotted.split(".")):
        data = {part: data}
    return data


def keys_with(kind: type) -> list[str]:
    return [key.path for key in SCHEMA.keys() if isinstance(key.check, kind)
            and "<name>" not in key.path and not key.path.startswith("sms.")]


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("path", keys_with(Duration))
def test_every_duration_has_a_ceiling(tmp_path: Path, path: str) -> None:
    found = problems(nested(path, 1e12), tmp_path)
    assert len(found) == 1
    assert found[0].startswith(f"{path}: 1000000000000.0 is too long (must be at most ")


@pytest.mark.parametrize("path", keys_with(Integer) + keys_with(Number))
def test_every_number_has_a_ceiling(tmp_path: Path, path: str) -> None:
    found = problems(nested(path, 10**12), tmp_path)
    assert len(found) == 1
    assert found[0].startswith(f"{path}: 1000000000000 is not allowed (")


@pytest.mark.parametrize(("path", "value", "message"), [
    ("jobs.dispatch.every", "2d", "'2d' is too long (must be at most 1d)"),
    ("jobs.events.every", 0.05, "0.05 is too short (must be at least 0.1s)"),
    ("http.timeout", "6m", "'6m' is too long (must be at most 5m)"),
    ("http.timeout", "0.05s", "'0.05s' is too short (must be at least 0.1s)"),
    ("dispatch.lease", "25h", "'25h' is too long (must be at most 1d)"),
    ("dispatch.lease", 1e12, "1000000000000.0 is too long (must be at most 1d)"),
    ("retry.backoff.max", "8d", "'8d' is too long (must be at most 7d)"),
    ("retry.backoff.factor", 11, "11 is not allowed (a number from 1 to 10)"),
    ("dispatch.rate_limit", 10001, "10001 is not allowed (null or a number > 0 and at most "
                                   "10000, messages per second per app)"),
    ("retention.fail", "36501d", "'36501d' is too long (must be at most 36500d)"),
    ("retention.events", "1e9d", "'1e9d' is not a duration (use 90s, 5m, 1h, 30d, a number "
                                 "of seconds or forever)"),
])
def test_limits(tmp_path: Path, path: str, value: object, message: str) -> None:
    assert problems(nested(path, value), tmp_path) == [f"{path}: {message}"]


@pytest.mark.parametrize(("path", "value", "seconds"), [
    ("jobs.dispatch.every", "1d", 86400.0), ("jobs.dispatch.every", 0.1, 0.1),
    ("http.timeout", "5m", 300.0), ("dispatch.lease", "1d", 86400.0),
    ("retry.backoff.max", "7d", 7 * 86400.0), ("retention.success", "36500d", 36500 * 86400.0),
])
def test_limits_are_inclusive(tmp_path: Path, path: str, value: object, seconds: float) -> None:
    data = nested(path, value)
    if path == "http.timeout":
        data["dispatch"] = {"lease": "1d"}  # a lease must outlast 3 timeouts
    config = build(data, tmp_path)
    section, _, name = path.rpartition(".")
    holder: Any = config
    for part in section.split("."):
        holder = holder[part] if isinstance(holder, type(config.jobs)) else getattr(holder, part)
    assert getattr(holder, name) == seconds


# --------------------------------------------------------------------------- lease vs timeout


def test_lease_must_be_three_timeouts(tmp_path: Path) -> None:
    assert problems({"dispatch": {"lease": "29s"}}, tmp_path) == [
        "dispatch.lease: '29s' is shorter than 3 × http.timeout = 30s (http.timeout is the "
        "default 10s): a send could outlive its lease, and another daemon could take the row "
        "over and send it again (make dispatch.lease at least 30s, or http.timeout shorter)"]
    assert build({"dispatch": {"lease": "30s"}}, tmp_path).dispatch.lease == 30.0


def test_lease_check_names_both_values(tmp_path: Path) -> None:
    assert problems({"http": {"timeout": "2m"}}, tmp_path) == [
        "dispatch.lease: the default 5m is shorter than 3 × http.timeout = 6m (http.timeout is "
        "set to '2m'): a send could outlive its lease, and another daemon could take the row "
        "over and send it again (make dispatch.lease at least 6m, or http.timeout shorter)"]
    config = build({"http": {"timeout": "2m"}, "dispatch": {"lease": "6m"}}, tmp_path)
    assert (config.http.timeout, config.dispatch.lease) == (120.0, 360.0)


def test_lease_check_skipped_when_either_is_bad(tmp_path: Path) -> None:
    found = problems({"http": {"timeout": "slow"}, "dispatch": {"lease": "10s"}}, tmp_path)
    assert [line.split(":")[0] for line in found] == ["http.timeout"]
    found = problems({"http": {"timeout": "5s"}, "dispatch": {"lease": "2d"}}, tmp_path)
    assert [line.split(":")[0] for line in found] == ["dispatch.lease"]


# --------------------------------------------------------------------------- warnings

NOBODY = ("console.listen is set but console.users is empty: nobody can log in (add a user "
          "with the password_hash `herald console-password` prints, or set "
          "console.listen: null)")
USERS = {"ann": {"password_hash": "scrypt$x$y"}}


def test_default_config_warns_only_that_nobody_can_log_in(tmp_path: Path) -> None:
    assert build({}, tmp_path).warnings == (NOBODY,)
    assert build({"console": {"listen": None}}, tmp_path).warnings == ()
    assert build({"console": {"users": USERS}}, tmp_path).warnings == ()


def test_warnings_for_servers_reachable_from_other_hosts(tmp_path: Path) -> None:
    config = build({"metrics": {"listen": "0.0.0.0:9464"}, "web": {"listen": "[::]:8080"},
                    "console": {"listen": "192.0.2.7:9465", "users": USERS}}, tmp_path)
    assert config.warnings == (
        "metrics.listen 0.0.0.0:9464 is reachable from other hosts; the metrics endpoint has "
        "no authentication (bind 127.0.0.1, or firewall the port)",
        "web.listen [::]:8080 is reachable from other hosts; WeChat's pushes should come "
        "through a TLS reverse proxy on this host (bind 127.0.0.1 and let the proxy forward)",
        "console.listen 192.0.2.7:9465 is reachable from other hosts; reach the console "
        "through a TLS reverse proxy or an SSH tunnel, and bind 127.0.0.1",
        "console.listen 192.0.2.7:9465 is not loopback and console.cookie_secure is false: the "
        "session cookie can travel without TLS (serve the console over HTTPS and set "
        "console.cookie_secure: true)",
    )
    secure = build({"console": {"listen": "0.0.0.0:9465", "users": USERS,
                                "cookie_secure": True}}, tmp_path)
    assert [w.split(" is ")[0] for w in secure.warnings] == ["console.listen 0.0.0.0:9465"]


def test_host_names_may_be_reachable(tmp_path: Path) -> None:
    config = build({"metrics": {"listen": "metrics.internal:9464"}, "console": {"users": USERS}},
                   tmp_path)
    assert config.warnings == (
        "metrics.listen metrics.internal:9464 is not a loopback address, so it may be reachable "
        "from other hosts; the metrics endpoint has no authentication (bind 127.0.0.1, or "
        "firewall the port)",)


@pytest.mark.parametrize("listen", ["127.0.0.1:1", "127.8.9.10:1", "[::1]:1", "localhost:1",
                                    "LOCALHOST:1", "[::ffff:127.0.0.1]:1"])
def test_loopback_addresses_do_not_warn(tmp_path: Path, listen: str) -> None:
    config = build({"metrics": {"listen": listen}, "web": {"listen": listen},
                    "console": {"listen": listen, "users": USERS}}, tmp_path)
    assert config.warnings == ()


# --------------------------------------------------------------------------- strict_secrets

SHIPPED = Path(__file__).parent.parent / "config.yaml"
UNSET_SECRET = ("apps.default.secret: environment variable WECHAT_SECRET is not set "
                "(set it, or write ${WECHAT_SECRET:-default})")


def test_unset_secret_variable_is_deferred(tmp_path: Path) -> None:
    data = {"apps": {"default": {"appid": "wx1", "secret": "${WECHAT_SECRET}"}}}
    with pytest.raises(ConfigError) as caught:
        build(data, tmp_path, env={})
    assert caught.value.problems == [UNSET_SECRET]  # strict: the same text, as an error
    config = build(data, tmp_path, env={}, strict_secrets=False)
    assert config.app(None).secret is None
    assert config.app(None).appid == "wx1"  # keys that are fine are unaffected
    assert dict(config.unresolved) == {"apps.default.secret": UNSET_SECRET}
    with pytest.raises(TypeError):
        config.unresolved["x"] = "y"  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        config.require("apps.")
    assert caught.value.problems == [UNSET_SECRET]
    with pytest.raises(ConfigError):
        config.require()  # no prefix: everything
    config.require("sms.", "apps.shop.")  # nothing unresolved there
    build(data, tmp_path).require()  # a strict load has nothing unresolved


def test_shipped_config_loads_without_credentials_when_not_strict() -> None:
    config = load_config(SHIPPED, env={}, strict_secrets=False)
    app = config.app(None)
    assert (app.appid, app.secret) == (None, None)
    assert list(config.unresolved) == ["apps.default.appid", "apps.default.secret"]
    assert config.unresolved["apps.default.appid"] == (
        "apps.default.appid: environment variable WECHAT_APPID is not set "
        "(set it, or write ${WECHAT_APPID:-default})")
    with pytest.raises(ConfigError) as caught:
        config.require("apps.default.")
    assert caught.value.path == str(SHIPPED.resolve())
    assert len(caught.value.problems) == 2


def test_missing_secret_file_is_deferred(tmp_path: Path) -> None:
    data = {"apps": {"default": {"appid": "wx1", "secret_file": "wechat_secret"}}}
    message = (f"apps.default.secret_file: 'wechat_secret' not found (looked for "
               f"{tmp_path.resolve()}/wechat_secret)")
    assert problems(data, tmp_path) == [message]
    config = build(data, tmp_path, strict_secrets=False)
    assert config.app(None).secret is None
    assert dict(config.unresolved) == {"apps.default.secret_file": message}


def test_missing_secret_for_token_source_is_deferred(tmp_path: Path) -> None:
    data = {"apps": {"default": {"appid": "wx1", "token_source": "legacy"}}}
    config = build(data, tmp_path, strict_secrets=False)
    assert dict(config.unresolved) == {"apps.default.secret": (
        "apps.default.secret: missing (required for token_source 'legacy'; give secret or "
        "secret_file)")}


def test_other_problems_stay_errors(tmp_path: Path) -> None:
    data = {"apps": {"default": {"appid": "${WX_APPID}", "secret": "${WECHAT_SECRET}"},
                     "shop": {"appid": "wx 2", "secret": "x"},
                     "blog": {"appid": "${BAD NAME}", "secret": "x"},
                     "news": {"secret": "x"}},
            "dispatch": {"workers": 0},
            "console": {"users": {"ann": {"password_hash": "${HASH}"}}}}
    found = problems(data, tmp_path, env={}, strict_secrets=False)
    assert [line.split(":")[0] for line in found] == [
        "apps.shop.appid", "apps.blog.appid", "apps.news.appid", "dispatch.workers",
        "console.users.ann.password_hash"]
    assert not any("WX_APPID" in line or "WECHAT_SECRET" in line for line in found)


def test_push_and_sms_credentials_are_deferred(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cb").write_text("x", encoding="utf-8")
    data = {"apps": {"default": {"appid": "wx1", "secret": "x", "push": {
                "token": "${PUSH_TOKEN}", "aes_key_file": "aes"}}},
            "sms": {"secret_id": "${SMS_ID}", "secret_key_file": "sms_key",
                    "sdk_app_id": "1400006666", "sign_name": "商城",
                    "callback_token": "short"}}
    config = build(data, tmp_path, env={"CREDENTIALS_DIRECTORY": str(creds)},
                   strict_secrets=False)
    assert sorted(config.unresolved) == [
        "apps.default.push.aes_key_file", "apps.default.push.token", "sms.callback_token",
        "sms.secret_id", "sms.secret_key_file"]
    push, sms = config.app(None).push, config.sms
    assert push is not None and (push.token, push.aes_key) == (None, None)
    assert sms is not None and (sms.secret_id, sms.secret_key, sms.callback_token) == (
        None, None, None)
    assert (sms.sdk_app_id, sms.sign_name) == ("1400006666", "商城")
    assert "short" not in "\n".join(config.unresolved.values())
    with pytest.raises(ConfigError) as caught:
        config.require("sms.")
    assert [line.split(":")[0] for line in caught.value.problems] == [
        "sms.secret_id", "sms.secret_key_file", "sms.callback_token"]
    config.require("apps.default.secret", "console.")
    # A non-secret SMS key is still checked.
    data["sms"]["sign_name"] = ""  # type: ignore[index]
    found = problems(data, tmp_path, env={}, strict_secrets=False)
    assert [line.split(":")[0] for line in found] == ["sms.sign_name"]


# --------------------------------------------------------------------------- docs and dataclasses

EXAMPLE = Path(__file__).parent.parent / "systemd" / "config.example.yaml"


def mentioned(text: str) -> set[str]:
    """Dotted keys a commented YAML file mentions, including commented-out lines: "# "
    inserted at a block's indentation, as an editor's comment-region does."""
    found: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        body = line[indent:]
        if body.startswith("# "):
            body = body[2:]
        match = re.match(r"( *)([a-z_][a-z0-9_]*):(?:\s|$)(.*)", body)
        if match is None:
            continue
        column = indent + len(match.group(1))
        while stack and stack[-1][0] >= column:
            stack.pop()
        stack.append((column, match.group(2)))
        path = ".".join(name for _, name in stack)
        found.add(path)
        flow = re.sub(r'"[^"]*"|\'[^\']*\'', "", match.group(3))
        if flow.lstrip().startswith("{"):
            inner = flow[flow.index("{") + 1:flow.index("}")]
            found.update(f"{path}.{name}" for name in re.findall(r"([a-z_][a-z0-9_]*)\s*:", inner))
    return found


def schema_paths() -> list[str]:
    paths: list[str] = []
    for decl in SCHEMA.decls:
        paths.append(decl.path)
        if getattr(decl, "file", False):
            paths.append(f"{decl.path}_file")
    return paths


def matches(pattern: str, path: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(re.escape("<name>"), "[^.]+"), path) is not None


def test_mentioned_reads_commented_blocks() -> None:
    text = ("# Prose: not a key\na:\n  b: {c: 1, d: \"x: y\"}\n  # e: 1\n  # f:\n  #   g: 2\n"
            "h: null\n# h:\n#   i: 3\n")
    assert mentioned(text) == {"a", "a.b", "a.b.c", "a.b.d", "a.e", "a.f", "a.f.g", "h", "h.i"}


def test_config_yaml_mentions_every_key() -> None:
    documented = mentioned(SHIPPED.read_text(encoding="utf-8"))
    missing = [path for path in schema_paths()
               if not any(matches(path, seen) for seen in documented)]
    assert missing == [], "config.yaml does not mention these schema keys"
    stale = sorted(seen for seen in documented
                   if not any(matches(path, seen) for path in schema_paths()))
    assert stale == [], "config.yaml mentions keys the schema does not have"


def test_example_config_mentions_only_schema_keys() -> None:
    documented = mentioned(EXAMPLE.read_text(encoding="utf-8"))
    stale = sorted(seen for seen in documented
                   if not any(matches(path, seen) for path in schema_paths()))
    assert stale == []
    sections = {decl.path for decl in SCHEMA.decls if "." not in decl.path}
    assert sections <= documented  # every top-level key appears in the example too


def sections() -> list[tuple[str, Node]]:
    out: list[tuple[str, Node]] = []
    todo = [("", SCHEMA.root)]
    while todo:
        path, node = todo.pop()
        if isinstance(node.decl, Section):
            out.append((path, node))
        todo.extend((f"{path}.{name}".lstrip("."), child) for name, child in node.children.items())
    return out


def test_dataclasses_have_a_field_per_key() -> None:
    checked = 0
    for path, node in sections():
        assert isinstance(node.decl, Section)
        target = getattr(node.decl.build, "cls", node.decl.build)
        if not dataclasses.is_dataclass(target):
            continue  # the top level and jobs are plain mappings
        checked += 1
        names = {item.name for item in dataclasses.fields(target)} - {"host", "port"}
        expected = set(node.children) | ({"name"} if path.endswith("<name>") else set())
        assert names == expected, path
    assert checked == len(sections()) - 2


def test_every_declaration_has_one_line_of_help() -> None:
    for decl in SCHEMA.decls:
        assert decl.help.strip() and "\n" not in decl.help and len(decl.help) <= 160, decl.path
