"""The language model.py declares the keys in: Key, Section, Names and Jobs, each put on a
field of a dataclass as its Annotated metadata; and the tree schema.py makes of them.

A declaration's path is dotted; `<name>` stands for a name the user chooses (an app, a
console user). It is bound when schema.py walks the dataclasses: a declaration written in
model.py does not know its own path yet.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from .values import Check, SecretText

ENTRY: Final = "<name>"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()  # a Key default: there is none, the key must be given


class _AsDefault:
    def __repr__(self) -> str:
        return "AS_DEFAULT"


AS_DEFAULT: Final = _AsDefault()  # a Key example: the sample shows the default


class Defer(enum.Enum):
    """Which problems of a key strict_secrets=False turns into Config.unresolved."""

    NEVER = "never"
    UNSET_ENV = "unset_env"  # only "environment variable X is not set"
    ANY = "any"


Applies = Literal["live", "restart", "unused"]


@dataclass(frozen=True, slots=True)
class Sighup:
    """What a changed value does on SIGHUP in each process: `live` (applied), `restart`
    (the reload is refused: the process must be restarted) or `unused` (taken as it is;
    that process never reads it). reload.py's tables are made of these."""

    run: Applies
    serve: Applies

    def of(self, process: Literal["run", "serve"]) -> Applies:
        return self.run if process == "run" else self.serve


BOTH_LIVE: Final = Sighup("live", "live")
RUN_LIVE: Final = Sighup("live", "unused")  # what `run` reads; `serve` sends nothing
RESTART: Final = Sighup("restart", "restart")
SERVE_RESTART: Final = Sighup("unused", "restart")  # what `serve` listens with


@dataclass(frozen=True, slots=True)
class Key:
    check: Check
    default: object  # as a user would write it in YAML (parsed by `check`), or REQUIRED
    help: str  # one line a newcomer can act on; "missing (required: <help>)" uses it
    hidden: bool = False  # the value never appears in a message
    defer: Defer = Defer.NEVER
    file: bool = False  # `<name>_file: path` may give the value instead (a secret file)
    env_override: str | None = None  # this variable, when set and not empty, replaces it
    reload: Sighup | None = None  # None: as its section
    example: object = AS_DEFAULT  # what config.yaml shows where the default will not do
    file_example: str | None = None  # what config.yaml shows for `<name>_file`
    path: str = ""  # bound by schema.py

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def bind(self, path: str, reload: Sighup | None) -> Key:
        check = self.check
        if self.file and isinstance(check, SecretText):
            check = replace(check, noun=f"{check.noun}, or use {path.rsplit('.', 1)[-1]}_file")
        return replace(self, path=path, check=check, reload=self.reload or reload)


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping with fixed keys, built into `build(**children)` (plus name= for an entry
    of a Names mapping). optional: absent or null means None, the feature is off (a field
    typed `X | None`). `toggle`: what SIGHUP does when it comes or goes, if not `reload`."""

    help: str
    reload: Sighup | None = None  # None: as its parent; its keys inherit it
    toggle: Sighup | None = None
    optional: bool = False
    build: Callable[..., Any] = dict
    path: str = ""


@dataclass(frozen=True, slots=True)
class Names:
    """A mapping from names the user chooses to sections of one shape, declared next as
    `<path>.<name>`; built into a read-only mapping in file order."""

    help: str
    pattern: re.Pattern[str]
    noun: str  # "app name"
    rule: str  # what `pattern` allows, in words
    entry_help: str  # what one entry is
    empty: str | None = None  # given but empty is an error with this message
    default: Mapping[str, Any] | None = None  # used when absent or null
    default_note: str | None = None  # why a variable is needed, when `default` applies
    example: Mapping[str, Any] | None = None  # config.yaml's commented-out entries
    reload: Sighup | None = None
    path: str = ""


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    every: str  # the default, as written in YAML
    help: str
    reload: Sighup | None = None


@dataclass(frozen=True, slots=True)
class Jobs:
    """A fixed set of named sections of one shape, {every: duration} each, built into a
    read-only mapping: each job's own default and help, one check for all."""

    help: str
    every: Check
    jobs: tuple[Job, ...]
    reload: Sighup | None = None


Decl = Key | Section | Names


def key(check: Check, default: object, help: str, **flags: Any) -> Key:
    return Key(check, default, help, **flags)


def secret(check: Check, default: object, help: str, **flags: Any) -> Key:
    """A credential: never shown, and strict_secrets=False may defer any problem with it.
    file=True: `<name>_file` may name a file holding it instead."""
    return Key(check, default, help, hidden=True, defer=Defer.ANY, **flags)


def section(help: str, **flags: Any) -> Section:
    return Section(help, **flags)


def names(help: str, pattern: str, noun: str, rule: str, entry_help: str, **options: Any
          ) -> Names:
    return Names(help, re.compile(pattern), noun, rule, entry_help, **options)


def jobs(help: str, every: Check, *entries: Job, reload: Sighup | None = None) -> Jobs:
    return Jobs(help, every, entries, reload)


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
    """The bound declarations as a tree rooted at the file's top level."""

    def __init__(self, root_build: Callable[..., Any], *decls: Decl) -> None:
        self.root = Node(Section("the whole file", build=root_build))
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

    def sighup_table(self, process: Literal["run", "serve"]) -> tuple[tuple[str, Applies], ...]:
        """(pattern, what) for reload.classify: every leaf a loaded Config can have (each
        key and its value's parts; an optional section that is null, a names mapping that
        is empty; a field a section derives, such as metrics.host or an entry's name),
        with `*` for a name the user picks. Patterns that match one leaf agree (a dotted
        console user name can match two of its entry's), so their order does not matter.
        A path no pattern matches needs a restart."""
        table: list[tuple[str, Applies]] = []
        for decl in self.decls:
            pattern = decl.path.replace(ENTRY, "*")
            assert decl.reload is not None
            if isinstance(decl, Key):  # (a value may itself have parts: QuotaReset.hour)
                table += [(pattern, decl.reload.of(process)),
                          (f"{pattern}.*", decl.reload.of(process))]
                continue
            if isinstance(decl, Names) or decl.optional:
                own = decl.toggle if isinstance(decl, Section) and decl.toggle else decl.reload
                table.append((pattern, own.of(process)))
            if isinstance(decl, Section) and dataclasses.is_dataclass(decl.build):
                declared = {d.path.rsplit(".", 1)[-1] for d in self.decls
                            if d.path.rpartition(".")[0] == decl.path}
                table += [(f"{pattern}.{item.name}", decl.reload.of(process))
                          for item in dataclasses.fields(decl.build)
                          if item.name not in declared]
        return tuple(table)


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
