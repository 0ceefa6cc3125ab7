"""The language schema.py is written in: Key, Section and Names declarations, and the tree
they make.

A declaration's path is dotted; `<name>` stands for a name the user chooses (an app, a
console user). Each declaration's parent must be declared before it, so reading the
table top to bottom reads the file top to bottom.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from .values import Check, SecretText

ENTRY: Final = "<name>"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()  # a Key default: there is none, the key must be given


class Defer(enum.Enum):
    """Which problems of a key strict_secrets=False turns into Config.unresolved."""

    NEVER = "never"
    UNSET_ENV = "unset_env"  # only "environment variable X is not set"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class Key:
    path: str
    check: Check
    default: object  # as a user would write it in YAML (parsed by `check`), or REQUIRED
    help: str  # one line a newcomer can act on; "missing (required: <help>)" uses it
    hidden: bool = False  # the value never appears in a message
    defer: Defer = Defer.NEVER
    file: bool = False  # `<name>_file: path` may give the value instead (a secret file)
    env_override: str | None = None  # this variable, when set and not empty, replaces it

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping with fixed keys, built into `build(**children)` (plus name= for an entry
    of a Names mapping). optional: absent or null means None, the feature is off."""

    path: str
    build: Callable[..., Any]
    help: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Names:
    """A mapping from names the user chooses to sections of one shape, declared next as
    `<path>.<name>`; built into a read-only mapping in file order."""

    path: str
    help: str
    pattern: re.Pattern[str]
    noun: str  # "app name"
    rule: str  # what `pattern` allows, in words
    empty: str | None = None  # given but empty is an error with this message
    default: Mapping[str, Any] | None = None  # used when absent or null
    default_note: str | None = None  # why a variable is needed, when `default` applies


Decl = Key | Section | Names


def key(path: str, check: Check, default: object, help: str, **flags: Any) -> Key:
    return Key(path, check, default, help, **flags)


def secret(path: str, check: Check, default: object, help: str, *, file: bool = False) -> Key:
    """A credential: never shown, and strict_secrets=False may defer any problem with it.
    file=True: `<name>_file` may name a file holding it instead."""
    if file and isinstance(check, SecretText):
        check = replace(check, noun=f"{check.noun}, or use {path.rsplit('.', 1)[-1]}_file")
    return Key(path, check, default, help, hidden=True, defer=Defer.ANY, file=file)


def section(path: str, build: Callable[..., Any], help: str, *, optional: bool = False
            ) -> Section:
    return Section(path, build, help, optional)


def names(path: str, help: str, pattern: str, noun: str, rule: str, **options: Any) -> Names:
    return Names(path, help, re.compile(pattern), noun, rule, **options)


@dataclass(slots=True)
class Node:
    decl: Decl
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def allowed(self) -> list[str]:
        """The keys a mapping at this node may have, in declaration order."""
        out: list[str] = []
        for name, child in self.children.items():
            out.append(name)
            if isinstance(child.decl, Key) and child.decl.file:
                out.append(f"{name}_file")
        return out


class Schema:
    """The declarations as a tree rooted at the file's top level."""

    def __init__(self, root_build: Callable[..., Any], *decls: Decl) -> None:
        self.root = Node(Section("", root_build, "the whole file"))
        self.decls = decls
        nodes: dict[str, Node] = {"": self.root}
        for decl in decls:
            parent_path, _, name = decl.path.rpartition(".")
            parent = nodes.get(parent_path)
            if parent is None or isinstance(parent.decl, Key):
                raise ValueError(f"schema: {decl.path} declared before a section {parent_path}")
            if isinstance(parent.decl, Names) != (name == ENTRY):
                raise ValueError(f"schema: {decl.path}: only a Names mapping has {ENTRY}")
            if name == ENTRY and not isinstance(decl, Section):
                raise ValueError(f"schema: {decl.path} must be a section")
            if name in parent.children:
                raise ValueError(f"schema: {decl.path} declared twice")
            node = Node(decl)
            parent.children[name] = node
            nodes[decl.path] = node

    def keys(self) -> Iterator[Key]:
        return (decl for decl in self.decls if isinstance(decl, Key))

    def find(self, dotted: str) -> Key | None:
        """The Key declaration a concrete dotted key (apps.shop.secret_file) belongs to."""
        return _find(self.root, dotted.split(".") if dotted else [])


def _find(node: Node, parts: list[str]) -> Key | None:
    if not parts:
        return node.decl if isinstance(node.decl, Key) else None
    if isinstance(node.decl, Names):
        entry = node.children[ENTRY]
        # A user name may itself contain dots (console.users.ann.lee.role).
        for cut in range(1, len(parts)):
            found = _find(entry, parts[cut:])
            if found is not None:
                return found
        return None
    head, rest = parts[0], parts[1:]
    child = node.children.get(head)
    if child is not None:
        return _find(child, rest)
    base = node.children.get(head.removesuffix("_file"))
    if (not rest and head.endswith("_file") and base is not None and isinstance(base.decl, Key)
            and base.decl.file):
        return base.decl
    return None
