"""docs/configuration.md, from the declarations: every key with its type and limits, its
default, what a SIGHUP does with it in `run` and in `serve`, and its help.
`python -m config.generate` writes it and tests/test_config_docs.py holds the file equal.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Final

from .sample import scalar
from .spec import ENTRY, REQUIRED, Applies, Key, Names, Node, Section, Sighup
from .values import Choice

SAYS: Final[dict[Applies, str]] = {"live": "applied", "restart": "restart",
                                   "unused": "not used"}

INTRO: Final = """\
# Configuration reference

<!-- Written by `python -m config.generate` from config/model.py, where each key is
declared; tests/test_config_docs.py fails when this file differs. Edit config/model.py. -->

Herald reads one YAML file: the one `--config PATH` names, else `$HERALD_CONFIG`, else
`config.yaml` in the current folder. The repository's `config.yaml` shows every key below
at its default.

- The file is checked whole when a verb starts, and by `herald check`: every problem is
  listed at once, each naming the key, the bad value and what is allowed, and the verb
  exits with status 2. Unknown keys are errors too (with a did-you-mean), so a typo never
  falls back to a default unnoticed.
- Any string may use `${VAR}` or `${VAR:-default}` (the default when `VAR` is unset or
  empty); `$${` is a literal `${`. A number or `true`/`false` taken from a variable counts
  as one.
{files}
- `HERALD_DATABASE`, when set and not empty, replaces `database`.
- Durations are `90s`, `5m`, `1h`, `30d` or a number of seconds. Relative paths are
  relative to the config file's folder.
- Settings that are valid but risky (a port open to other hosts, a console nobody can log
  in to) are warnings: `herald check` prints them, and `serve` logs them when it starts.
- Verbs that only read or write the queue (`init-db`, `status`, `retry`, ...) run without
  the apps' credentials in the environment.

## Reloading

`run` and `serve` read the file again (and the templates) on SIGHUP: `systemctl reload
herald` or `systemctl reload herald-web`. A reload is all or nothing. The **SIGHUP**
column says what each process, `run` / `serve`, does with a changed value:

- **applied**: the reload puts it in force;
- **restart**: the reload is refused, naming the key, and everything running stays as it
  was; restart that process to apply the file;
- **not used**: that process never reads it; the reload takes it and nothing changes.

A reload is also refused when the file no longer validates, or when the templates would
drop a template that waiting rows name.

## Keys
"""

HEAD: Final = ("| Key | Type | Default | SIGHUP `run` / `serve` | What it does |\n"
               "|---|---|---|---|---|")


def _cell(text: str) -> str:
    """Text fit for a table cell: a | would end the cell, a <word> would vanish as HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def _sighup(reload: Sighup | None) -> str:
    assert reload is not None
    return f"{SAYS[reload.run]} / {SAYS[reload.serve]}"


def _type(key: Key) -> str:
    check = key.check
    if isinstance(check, Choice):
        meanings = check.meanings or ("",) * len(check.allowed)
        said = [f"`{choice}` ({meaning})" if meaning else f"`{choice}`"
                for choice, meaning in zip(check.allowed, meanings, strict=True)]
        return "one of " + ", ".join(said) + (" (any case)" if check.upper else "")
    limits = check.limits()
    return f"{check.kind}: {limits}" if limits else check.kind


def _default(key: Key) -> str:
    if key.default is REQUIRED:
        return "required"
    return f"`{scalar(key.default)}`"


def _rows(node: Node) -> Iterator[str]:
    for child in node.children.values():
        decl = child.decl
        if isinstance(decl, Key):
            yield (f"| `{decl.path}` | {_cell(_type(decl))} | {_cell(_default(decl))} | "
                   f"{_sighup(decl.reload)} | {_cell(decl.help)} |")
            if decl.file:
                yield (f"| `{decl.path}_file` | file path: looked up in `$CREDENTIALS_DIRECTORY` "
                       f"first, then in the config file's folder | none | "
                       f"{_sighup(decl.reload)} | instead of `{decl.name}`: a file holding it |")
        elif isinstance(decl, Names):
            default = (f"`{_cell(scalar(dict(decl.default)))}`" if decl.default is not None
                       else "`{}`")
            yield (f"| `{decl.path}` | mapping of {decl.noun}s ({_cell(decl.rule)}) to "
                   f"settings | {default} | {_sighup(decl.reload)} | {_cell(decl.help)} |")
            entry = child.children[ENTRY]
            assert isinstance(entry.decl, Section)
            yield f"| `{entry.decl.path}` | mapping | | | {_cell(entry.decl.help)} |"
            yield from _rows(entry)
        else:
            assert isinstance(decl, Section)
            if decl.optional:  # (its SIGHUP: what adding or removing it does)
                yield (f"| `{decl.path}` | mapping, or null | `null` | "
                       f"{_sighup(decl.toggle or decl.reload)} | {_cell(decl.help)} |")
            elif len(child.children) > 1:  # (jobs.purge: {every} says it all)
                yield f"| `{decl.path}` | mapping | | | {_cell(decl.help)} |"
            yield from _rows(child)


def _keys(node: Node) -> Iterator[Key]:
    for child in node.children.values():
        if isinstance(child.decl, Key):
            yield child.decl
        yield from _keys(child)


def configuration_md(root: Node) -> str:
    """The whole of docs/configuration.md for the schema rooted at `root`."""
    files = ", ".join(f"`{key.path}_file`" for key in _keys(root) if key.file)
    secrets = textwrap.fill(
        f"A secret may come from a file instead: {files}. A relative name is looked up in "
        "`$CREDENTIALS_DIRECTORY` first (where systemd's `LoadCredential=` puts it), then "
        "in the config file's folder. No message, log line or page shows a secret.",
        90, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
    parts = [INTRO.replace("{files}", secrets)]
    top_keys = [child for child in root.children.values() if isinstance(child.decl, Key)]
    if top_keys:
        parts.append("### Top level\n\n" + HEAD + "\n" + "\n".join(_rows(Node(
            Section("the top level"), {c.decl.path: c for c in top_keys}))) + "\n")
    for name, child in root.children.items():
        decl = child.decl
        if isinstance(decl, Key):
            continue
        # a plain section is its heading; one that may be null or empty has a row of its own
        plain = isinstance(decl, Section) and not decl.optional
        rows = _rows(child if plain else Node(Section("one section"), {name: child}))
        parts.append(f"### {name}\n\n{decl.help[:1].upper()}{decl.help[1:]}.\n\n{HEAD}\n"
                     + "\n".join(rows) + "\n")
    return "\n".join(parts)
