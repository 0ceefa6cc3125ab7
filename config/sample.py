"""config.yaml's text, from the declarations: every key at its default with its help (and
limits) as a comment; optional sections, names mappings and `*_file` alternatives shown
commented out with their examples. `python -m config.generate` writes it and
tests/test_config_docs.py holds the file equal to it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from typing import Any, Final

import yaml

from .spec import AS_DEFAULT, ENTRY, REQUIRED, Key, Names, Node, Section
from .values import Choice, Duration, Integer, Number

WIDTH: Final = 100  # ruff's line length, for the same editors
COMMENT_COLUMN: Final = 32  # where a key's comment starts when it fits on its line

HEADER: Final = """\
# Herald configuration. Every key is shown at its default; unknown keys are errors.
# Any string may use ${VAR} or ${VAR:-default} (environment variables; $${ is a literal ${).
# Durations: 90s, 5m, 1h, 30d or a plain number of seconds.
# Relative paths are relative to this file's folder.
# Optional keys and sections are shown commented out ("# key: value"); uncomment to use.
# Every key's type, limits and what a reload does with it: docs/configuration.md.
# (Written by `python -m config.generate` from config/model.py, where each key is declared.)
"""

# Strings YAML would read as something else, or that only look right quoted (an id of
# digits, a time), are written in double quotes.
_QUOTED: Final = re.compile(r"[0-9]+|[0-9]{2}:[0-9]{2}.*|.*\$\.\.\.")


def scalar(value: object, *, flow: bool = False) -> str:
    """`value` as YAML writes it on one line (a key's default or example)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {scalar(v, flow=True)}" for k, v in value.items()) + "}"
    text = str(value)
    plain = (not _QUOTED.fullmatch(text)
             and not (flow and re.search(r"[,{}\[\]]", text))
             and yaml.safe_load(f"k: {text}") == {"k": text})
    return text if plain else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment_of(key: Key, help: str | None = None) -> str:
    """A key's comment: its help, with its limits when they are short and not said yet."""
    check, help = key.check, key.help if help is None else help
    limits = check.limits() if isinstance(check, Integer | Number | Duration | Choice) else ""
    if not limits or limits in help:
        return help
    return f"{help}: {limits}" if isinstance(check, Choice) else f"{help}, {limits}"


class _Lines:
    def __init__(self) -> None:
        self.out: list[str] = []

    def above(self, indent: int, text: str) -> None:
        prefix = " " * indent + "# "
        self.out += textwrap.wrap(text, WIDTH, initial_indent=prefix, subsequent_indent=prefix,
                                  break_on_hyphens=False, break_long_words=False)

    def item(self, indent: int, text: str, comment: str = "") -> None:
        line = " " * indent + text
        if not comment:
            self.out.append(line)
            return
        column = max(COMMENT_COLUMN, len(line) + 2)
        one = f"{line.ljust(column)}# {comment}"
        if len(one) <= WIDTH:
            self.out.append(one)
        else:
            self.above(indent, comment)
            self.out.append(line)

    def commented(self, indent: int, block: list[str]) -> None:
        """`block` commented out as an editor's comment-region does: "# " at its indent."""
        for line in block:
            self.out.append(" " * indent + "# " + line[indent:])


def _value(key: Key, given: Mapping[str, Any] | None, example: bool) -> object:
    if given is not None and key.name in given:
        return given[key.name]
    if example and key.example is not AS_DEFAULT:
        return key.example
    if key.default is REQUIRED:
        if key.example is AS_DEFAULT:
            raise ValueError(f"{key.path}: a required key needs an example for config.yaml")
        return key.example
    return key.default


def _children(lines: _Lines, node: Node, indent: int, given: Mapping[str, Any] | None,
              example: bool) -> None:
    for name, child in node.children.items():
        _node(lines, name, child, indent, None if given is None else given.get(name),
              given is not None and name in given, example)


def _single_key(node: Node) -> Key | None:
    """The key of a section that holds nothing else (jobs.dispatch: {every: 60s})."""
    if len(node.children) != 1:
        return None
    only = next(iter(node.children.values())).decl
    return only if isinstance(only, Key) and not only.file else None


def _node(lines: _Lines, name: str, node: Node, indent: int, given: Any, has_given: bool,
          example: bool) -> None:
    decl = node.decl
    top = indent == 0
    if isinstance(decl, Key):
        parent_given = {name: given} if has_given else None
        value = scalar(_value(decl, parent_given, example))
        if top:
            lines.above(0, comment_of(decl))
            lines.item(0, f"{name}: {value}")
        else:
            lines.item(indent, f"{name}: {value}", comment_of(decl))
        if decl.file and decl.file_example:  # (inside a commented-out block: as it is)
            lines.item(indent, f"{'' if example else '# '}{name}_file: "
                               f"{scalar(decl.file_example)}",
                       f"or instead of {name}: a file holding it")
        return
    if isinstance(decl, Names):
        _names(lines, name, node, indent, decl, example)
        return
    assert isinstance(decl, Section)
    if decl.optional and not example:
        if top:
            lines.above(0, decl.help)
            lines.item(0, f"{name}: null")
        else:
            lines.item(indent, f"{name}: null", decl.help)
        block = _Lines()
        _node(block, name, node, indent, None, False, True)
        lines.commented(indent, block.out)
        return
    only = _single_key(node) if not top else None
    if only is not None:
        inner = _value(only, given if isinstance(given, Mapping) else None, example)
        lines.item(indent, f"{name}: {{{only.name}: {scalar(inner, flow=True)}}}",
                   comment_of(only, decl.help))
        return
    if not example:
        lines.above(indent, decl.help)
    lines.item(indent, f"{name}:")
    _children(lines, node, indent + 2, given if isinstance(given, Mapping) else None, example)


def _names(lines: _Lines, name: str, node: Node, indent: int, decl: Names, example: bool
           ) -> None:
    if decl.default is not None:
        lines.above(indent, decl.help)
        lines.item(indent, f"{name}:")
        for entry, settings in decl.default.items():
            lines.item(indent + 2, f"{entry}:")
            _children(lines, node.children[ENTRY], indent + 4, settings, example)
        return
    lines.item(indent, f"{name}: {{}}", f"{decl.help}; names: {decl.rule}")
    if decl.example:
        block = _Lines()
        block.item(indent, f"{name}:")
        for entry, settings in decl.example.items():
            block.item(indent + 2, f"{entry}: {scalar(settings)}")
        lines.commented(indent, block.out)


def config_yaml(root: Node) -> str:
    """The whole of config.yaml for the schema rooted at `root`."""
    lines = _Lines()
    for name, child in root.children.items():
        lines.out.append("")
        _node(lines, name, child, 0, None, False, False)
    return HEADER + "\n".join(lines.out) + "\n"
