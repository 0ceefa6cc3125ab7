"""Applies the schema to parsed YAML: every problem collected, then the dataclasses built.

The walk visits the file in schema order, so problems come out in the order a reader
meets the keys. Each key ends in `values` (None after a problem), with how its value
reads in a message in `origin` ("'2h'", or "the default 1h" when it was not given), for
the cross-field rules in rules.py.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from .credentials import read_secret_file
from .interpolate import interpolate
from .secret import Secret
from .spec import ENTRY, REQUIRED, Defer, Key, Names, Node, Schema, Section
from .values import Context, Invalid, shown


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


MISSING: Final = _Sentinel("<missing>")  # key absent
BAD: Final = _Sentinel("<bad>")  # value unusable, problem already reported


def join(prefix: str, name: object) -> str:
    text = name if isinstance(name, str) else repr(name)
    return f"{prefix}.{text}" if prefix else text


def did_you_mean(name: object, allowed: Sequence[str]) -> str:
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""


def default_text(value: object) -> str:
    """A default as config.yaml writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Walker:
    def __init__(self, schema: Schema, ctx: Context, *, strict_secrets: bool = True) -> None:
        self.schema = schema
        self.ctx = ctx
        self.strict_secrets = strict_secrets
        self.problems: list[str] = []
        self.unresolved: dict[str, str] = {}  # deferred problems (strict_secrets=False)
        self.bad: set[str] = set()  # dotted keys with a problem, reported or deferred
        self.values: dict[str, Any] = {}
        self.origin: dict[str, str] = {}
        self.entries: dict[str, list[str]] = {}  # Names path -> valid names, in file order
        self.absent: set[str] = set()  # optional sections not given

    # ---- reporting and queries (rules.py uses these)

    def add(self, dotted: str, message: str, *, unset: bool = False,
            key: Key | None = None) -> None:
        """Report a problem with `dotted`: an error, or deferred when it is a credential's
        and strict_secrets is off."""
        line = f"{dotted}: {message}"
        self.bad.add(dotted)
        spec = key if key is not None else self.schema.find(dotted)
        deferrable = spec is not None and (
            spec.defer is Defer.ANY or (spec.defer is Defer.UNSET_ENV and unset))
        if deferrable and not self.strict_secrets:
            self.unresolved.setdefault(dotted, line)
        else:
            self.problems.append(line)

    def ok(self, *dotted: str) -> bool:
        """None of these keys had a problem."""
        return not self.bad.intersection(dotted)

    def names(self, path: str) -> list[str]:
        return self.entries.get(path, [])

    def show(self, key: Key | None, value: object) -> str:
        if key is not None and key.hidden:
            return "<secret>"
        return shown(value, key.check.mask if key is not None else str)

    # ---- the walk

    def walk(self, data: Mapping[str, Any]) -> None:
        self._section(self.schema.root, data, "", None)

    def _section(self, node: Node, raw: object, dotted: str, note: str | None) -> None:
        assert isinstance(node.decl, Section)
        allowed = node.allowed
        if raw is not MISSING and raw is not None and not isinstance(raw, Mapping):
            self.add(dotted or "(top level)",
                     f"{shown(raw)} is not a mapping (allowed keys: {', '.join(allowed)})")
            raw = None
        if (raw is MISSING or raw is None) and node.decl.optional:
            self.absent.add(dotted)
            return
        section: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        for name in section:
            if name not in allowed:
                self.add(join(dotted, name), f"unknown key{did_you_mean(name, allowed)} "
                                             f"(allowed: {', '.join(allowed)})")
        for name, child in node.children.items():
            here = join(dotted, name)
            if isinstance(child.decl, Key):
                self._key(child.decl, section, here, note)
            elif isinstance(child.decl, Names):
                self._names(child, section.get(name, MISSING), here, note)
            else:
                self._section(child, section.get(name, MISSING), here, note)

    def _names(self, node: Node, raw: object, dotted: str, note: str | None) -> None:
        decl = node.decl
        assert isinstance(decl, Names)
        self.entries[dotted] = []
        if raw is MISSING or raw is None:
            if decl.default is None:
                return
            raw, note = decl.default, decl.default_note
        if not isinstance(raw, Mapping):
            self.add(dotted, f"{shown(raw)} is not a mapping of {decl.noun} to settings")
            return
        if not raw and decl.empty:
            self.add(dotted, decl.empty)
            return
        for name, settings in raw.items():
            here = join(dotted, name)
            if not isinstance(name, str) or not decl.pattern.fullmatch(name):
                self.add(here, f"{name!r} is not a valid {decl.noun} (allowed: {decl.rule})")
                continue
            self.entries[dotted].append(name)
            self._section(node.children[ENTRY], settings, here, note)

    def _take(self, key: Key, section: Mapping[str, Any], name: str, dotted: str,
              note: str | None, *, hidden: bool) -> object:
        """section[name] interpolated; MISSING if absent, BAD after a reported problem."""
        if name not in section:
            return MISSING
        value, problems = interpolate(section[name], self.ctx.env, hidden=hidden,
                                      unset_hint=note)
        for problem in problems:
            self.add(dotted, problem.message, unset=problem.unset, key=key)
        return BAD if problems else value

    def _key(self, key: Key, section: Mapping[str, Any], dotted: str, note: str | None) -> None:
        self.values[dotted] = None
        if key.env_override and self.ctx.env.get(key.env_override):
            # The file's own value is not even checked: the override exists for
            # environments where it does not apply.
            value: object = self.ctx.env[key.env_override]
            self.origin[dotted] = self.show(key, value)
            self.values[dotted] = self._parse(key, value, f"{dotted} (from {key.env_override})")
            return
        if key.file:
            self._secret_pair(key, section, dotted, note)
            return
        value = self._take(key, section, key.name, dotted, note, hidden=key.hidden)
        if value is BAD:
            return
        if value is MISSING:
            if key.default is REQUIRED:
                self.add(dotted, f"missing (required: {key.help})", key=key)
                return
            value = key.default
            self.origin[dotted] = f"the default {default_text(value)}"
        else:
            self.origin[dotted] = self.show(key, value)
        self.values[dotted] = self._parse(key, value, dotted)

    def _parse(self, key: Key, value: object, label: str) -> Any:
        if value is None and key.default is None:
            return None
        try:
            return key.check.parse(value, self.ctx)
        except Invalid as error:
            self.add(label, f"{self.show(key, value)} {error.reason}" if error.with_value
                     else error.reason, key=key)
            return None

    def _secret_pair(self, key: Key, section: Mapping[str, Any], dotted: str,
                     note: str | None) -> None:
        """`secret:` or `secret_file:` (and the like): at most one, the value a Secret."""
        file_name, file_dotted = f"{key.name}_file", f"{dotted}_file"
        inline = self._take(key, section, key.name, dotted, note, hidden=True)
        path = self._take(key, section, file_name, file_dotted, note, hidden=False)
        has_inline = inline is not MISSING and inline is not None
        has_file = path is not MISSING and path is not None
        if has_inline and has_file:
            self.add(file_dotted, f"cannot be combined with {dotted} "
                                  f"(give exactly one of {key.name} and {file_name})", key=key)
        if (has_inline and has_file) or inline is BAD or path is BAD:
            self.bad.add(dotted)
            return
        if has_inline:
            self.origin[dotted] = "<secret>"
            self.values[dotted] = self._parse(key, inline, dotted)
        elif has_file:
            self.origin[dotted] = shown(path)
            try:
                text, where = read_secret_file(path, self.ctx)
            except Invalid as error:
                self.add(file_dotted, f"{shown(path)} {error.reason}", key=key)
                self.bad.add(dotted)
                return
            try:
                self.values[dotted] = key.check.parse(Secret(text), self.ctx)
            except Invalid as error:
                self.add(file_dotted, f"{shown(path)} ({where}): its content {error.reason}",
                         key=key)
                self.bad.add(dotted)
        elif key.default is REQUIRED:
            self.add(dotted, f"missing (required: {key.help})", key=key)

    # ---- building

    def build(self) -> dict[str, Any]:
        """The top-level values as the dataclasses hold them (call only without problems)."""
        built = self._build(self.schema.root, "", None)
        assert isinstance(built, dict)
        return built

    def _build(self, node: Node, dotted: str, name: str | None) -> Any:
        decl = node.decl
        if isinstance(decl, Key):
            return self.values.get(dotted)
        if isinstance(decl, Names):
            entry = node.children[ENTRY]
            return MappingProxyType({entry_name: self._build(entry, join(dotted, entry_name),
                                                             entry_name)
                                     for entry_name in self.names(dotted)})
        if dotted in self.absent:
            return None
        kwargs = {child_name: self._build(child, join(dotted, child_name), None)
                  for child_name, child in node.children.items()}
        if name is not None:
            kwargs["name"] = name
        return decl.build(**kwargs)
