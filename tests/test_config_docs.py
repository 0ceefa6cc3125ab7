"""config/model.py declares each key once; what follows from it is held to it here:
config.yaml and docs/configuration.md (generated, compared byte for byte), the
dataclasses (no second default, types that match what loading gives), reload's tables
(what the docs promise is what a reload does) and systemd/config.example.yaml (the
defaults except where it means to differ)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pytest

from config import Config, JobConfig, config_from_dict, load_config
from config.generate import ROOT, generated, stale
from config.reference import configuration_md
from config.sample import config_yaml
from config.schema import SCHEMA, declarations
from config.spec import (
    ENTRY,
    REQUIRED,
    RESTART,
    RUN_LIVE,
    Key,
    Names,
    Schema,
    Section,
    key,
)
from config.values import Integer
from reload import RUN_KEYS, SERVE_KEYS, classify, flatten

ENV = {"WECHAT_APPID": "wx0123456789abcdef", "WECHAT_SECRET": "app-secret-VALUE"}
SAYS = {"applied": "live", "restart": "restart", "not used": "unused"}


# --------------------------------------------------------------------------- generated files


@pytest.mark.parametrize("relative", sorted(generated()), ids=str)
def test_generated_file_is_what_the_declarations_give(relative: Path) -> None:
    """A default, a help text or a limit changed in model.py alone, or a hand edit of the
    file (a comment included), fails here until `python -m config.generate` is run."""
    want = generated()[relative]
    have = (ROOT / relative).read_text(encoding="utf-8")
    assert have == want, f"{relative} differs: run python -m config.generate"


def test_the_check_names_a_stale_file(tmp_path: Path) -> None:
    for relative, text in generated().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    assert stale(tmp_path) == []
    sample = tmp_path / "config.yaml"
    sample.write_text(sample.read_text(encoding="utf-8").replace(
        "# rows claimed per run", "# rows per run"), encoding="utf-8")
    assert stale(tmp_path) == [Path("config.yaml")]


def test_generate_check_exits_zero_on_this_tree() -> None:
    done = subprocess.run([sys.executable, "-m", "config.generate", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_the_sample_loads_to_the_defaults(tmp_path: Path) -> None:
    """(tests/test_config.py loads the shipped file; this, whatever the generator gives.)"""
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(SCHEMA.root), encoding="utf-8")
    loaded = load_config(path, env=ENV)
    assert loaded == config_from_dict({}, base_dir=tmp_path, env=ENV, path=path.resolve())


# --------------------------------------------------------------------------- the reference


def _documented() -> dict[str, list[str]]:
    """Each row of docs/configuration.md: key -> its cells."""
    rows: dict[str, list[str]] = {}
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        match = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", match.group(2))]
    return rows


def test_the_reference_has_a_row_for_every_key() -> None:
    rows = _documented()
    keys = [k.path for k in SCHEMA.keys()] + [f"{k.path}_file" for k in SCHEMA.keys() if k.file]
    assert sorted(k for k in keys if k not in rows) == []
    optional = [d.path for d in SCHEMA.decls
                if isinstance(d, Names) or (isinstance(d, Section) and d.optional)]
    assert sorted(p for p in optional if p not in rows) == []


def test_the_reference_says_what_a_reload_does() -> None:
    """The SIGHUP column, read back, is what reload.classify answers for that key."""
    checked = 0
    for path, cells in _documented().items():
        sighup = cells[2]
        if not sighup:
            continue  # a section that is only a heading for its keys
        run, serve = (SAYS[word.strip()] for word in sighup.split("/"))
        concrete = path.replace(ENTRY, "shop").removesuffix("_file")
        assert (classify(concrete, RUN_KEYS), classify(concrete, SERVE_KEYS)) == (run, serve), path
        checked += 1
    assert checked >= len(list(SCHEMA.keys()))


@pytest.mark.parametrize("table", [RUN_KEYS, SERVE_KEYS], ids=["run", "serve"])
def test_every_pattern_a_leaf_matches_says_the_same(tmp_path: Path, table) -> None:
    """reload.classify takes the first match; the tables are made so that order cannot
    matter: every leaf of a loaded config, odd names included, matches patterns that
    agree."""
    data = dict(RICH, console={"users": {"ann.role.x": {"password_hash": "scrypt$x"},
                                         "push.token": {"password_hash": "scrypt$y"}}})
    leaves = flatten(config_from_dict(data, base_dir=tmp_path, env=ENV))
    assert len(leaves) > 60
    for leaf in leaves:
        said = {what for pattern, what in table if fnmatchcase(leaf, pattern)}
        assert len(said) == 1, (leaf, said)


def test_the_reference_gives_each_default_and_limit() -> None:
    rows = _documented()
    assert rows["dispatch.batch_size"][:2] == ["integer: 1 to 10000", "`100`"]
    assert rows["dispatch.lease"][:2] == ["duration: 10s to 1d", "`5m`"]
    assert rows["apps.<name>.appid"][1] == "required"
    assert rows["dispatch.on_stale"][0] == ("one of `retry` (at-least-once), "
                                            "`fail` (at-most-once)")
    assert rows["sms"][:3] == ["mapping, or null", "`null`", "applied / restart"]


def test_a_table_cell_cannot_be_broken_by_a_help_text() -> None:
    text = configuration_md(SCHEMA.root)
    assert "&lt;callback_token>" in text  # not a tag that would vanish
    assert all(line.count("|") - line.count("\\|") == 6
               for line in text.splitlines() if line.startswith("| `"))


# --------------------------------------------------------------------------- the dataclasses


def _key_fields() -> list[tuple[type, str, Key]]:
    out = []
    for decl in SCHEMA.decls:
        if isinstance(decl, Section) and dataclasses.is_dataclass(decl.build):
            for name, child in SCHEMA_NODES[decl.path].children.items():
                if isinstance(child.decl, Key):
                    out.append((decl.build, name, child.decl))
    root = SCHEMA.root
    out += [(Config, name, child.decl) for name, child in root.children.items()
            if isinstance(child.decl, Key)]
    return out


def _nodes() -> dict[str, Any]:
    found: dict[str, Any] = {}
    todo = [SCHEMA.root]
    while todo:
        node = todo.pop()
        found[node.decl.path] = node
        todo.extend(node.children.values())
    return found


SCHEMA_NODES = _nodes()


def test_no_declared_field_has_a_second_default_on_its_dataclass() -> None:
    """A key's (or a section's) default is its declaration's; a dataclass default beside
    it would be a second one, for code that builds the class by hand."""
    classes = {Config} | {d.build for d in SCHEMA.decls
                          if isinstance(d, Section) and dataclasses.is_dataclass(d.build)}
    declared = 0
    for cls in classes:
        hints = get_type_hints(cls, include_extras=True)
        for item in dataclasses.fields(cls):
            if get_origin(hints[item.name]) is Annotated or cls is JobConfig:
                declared += 1
                assert (item.default, item.default_factory) == (
                    dataclasses.MISSING, dataclasses.MISSING), f"{cls.__name__}.{item.name}"
    names = sum(isinstance(d, Names) for d in SCHEMA.decls)
    optional = sum(isinstance(d, Section) and d.optional for d in SCHEMA.decls)
    assert declared >= len(list(SCHEMA.keys())) + names + optional


def _conforms(value: object, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arm) for arm in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:
        return type(value) is float  # (an int where a float is declared: a check slipped)
    return isinstance(value, hint)


RICH = {
    "apps": {"default": {"appid": "wx1", "secret": "s", "kind": "official_account",
                         "push": {"token": "abc", "aes_key": "a" * 43}},
             "shop": {"appid": "wx2", "token_source": "external", "token_file": "t"}},
    "dispatch": {"rate_limit": 2},
    "retention": {"success": "forever"},
    "console": {"users": {"ann": {"password_hash": "scrypt$x", "role": "operator"}}},
    "sms": {"secret_id": "AKID1", "secret_key": "k", "sdk_app_id": 1400, "sign_name": "x",
            "callback_token": "c" * 20},
}


@pytest.mark.parametrize("data", [{}, RICH], ids=["defaults", "every key set"])
def test_each_field_holds_what_its_type_says(tmp_path: Path, data: dict[str, Any]) -> None:
    """mypy trusts the annotations; here they meet what the checks really give."""
    cfg = config_from_dict(data, base_dir=tmp_path, env=ENV)
    checked = 0
    for cls, name, decl in _key_fields():
        hint = get_type_hints(cls)[name]
        for path, value in _values(cfg, decl.path.split(".")):
            assert _conforms(value, hint), f"{path}: {value!r} is not {hint}"
            checked += 1
    assert checked >= (len(list(SCHEMA.keys())) if data else 40)


def _values(value: Any, parts: list[str], path: str = "") -> list[tuple[str, object]]:
    """(concrete path, value) of a declared path in a loaded config, each entry of a names
    mapping in turn; nothing under a section that is null."""
    if not parts:
        return [(path, value)]
    head, rest = parts[0], parts[1:]
    if value is None:
        return []
    if head == ENTRY:
        return [found for name, entry in value.items()
                for found in _values(entry, rest, f"{path}.{name}")]
    child = value[head] if isinstance(value, Mapping) else getattr(value, head)
    return _values(child, rest, f"{path}.{head}".lstrip("."))


# --------------------------------------------------------------------------- the systemd example

EXAMPLE = ROOT / "systemd" / "config.example.yaml"
# what a production install sets on purpose; every other key it writes is the default
DELIBERATE = {"database", "apps.default.appid", "apps.default.secret", "log.format"}


def test_the_example_writes_the_defaults_but_where_it_means_to_differ(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(EXAMPLE, etc / "config.yaml")
    (etc / "wechat_secret").write_text("from-the-credential\n", encoding="utf-8")
    example = flatten(load_config(etc / "config.yaml", env={}))
    defaults = flatten(config_from_dict({}, base_dir=etc, env=ENV))
    differ = {k for k in example.keys() | defaults.keys()
              if example.get(k) != defaults.get(k)}
    assert differ == DELIBERATE


# --------------------------------------------------------------------------- the language


@dataclasses.dataclass(frozen=True)
class _Quiet:
    level: Annotated[int, key(Integer(1, 9), 5, "how loud")]


@dataclasses.dataclass(frozen=True)
class _Loud:
    level: Annotated[int, key(Integer(1, 9), REQUIRED, "how loud", reload=RUN_LIVE)]


def test_a_key_must_say_what_a_reload_does() -> None:
    """A new key with no `reload=` of its own or its section's is refused at import, so no
    key reaches reload's tables by accident."""
    with pytest.raises(TypeError, match=r"noise.level: say what SIGHUP does"):
        list(declarations(_Quiet, "noise"))
    assert [d.reload for d in declarations(_Quiet, "noise", RESTART)] == [RESTART]


def test_a_required_key_needs_an_example_for_the_sample() -> None:
    decls = list(declarations(_Loud, "noise"))
    with pytest.raises(ValueError, match="noise.level: a required key needs an example"):
        config_yaml(Schema(dict, Section("noise", build=_Loud, path="noise"), *decls).root)
