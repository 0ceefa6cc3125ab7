"""An app's template list from WeChat, held against templates.yaml, or turned into it.

GET /wxaapi/newtmpl/gettemplate lists the app's subscribe templates: priTmplId, title,
content (one "label:{{key.DATA}}" a line), example, type (2 one-time, 3 long-term)
and keywordEnumValueList (an enum keyword's allowed values). compare() says where a
template of templates.yaml and WeChat's disagree, each problem at its key's line;
pull_yaml() writes ready-to-paste entries for the templates the file lacks.
Pure functions of their inputs: the verbs in commands/check.py do the fetching.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keywords import RULES, KeywordError, keyword_type
from templates import NAME_RE, PARAM_RE, Template

_KEYWORD = re.compile(r"\{\{\s*([a-z_]+\d+)\.DATA\s*\}\}")
_LABEL_END = re.compile(r"[:：\s]+$")
_EXAMPLE = re.compile(r"\s*(.*?)\s*[:：]\s*(.*)$")  # "商品名称:可口可乐"


@dataclass(frozen=True)
class RemoteTemplate:
    template_id: str
    title: str
    long_term: bool
    keywords: tuple[tuple[str, str], ...]  # (data key, label), in the card's order
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    examples: Mapping[str, str] = field(default_factory=dict)  # data key -> example

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.keywords]

    def label(self, key: str) -> str:
        return dict(self.keywords).get(key, "")


def parse_list(data: Iterable[Any]) -> list[RemoteTemplate]:
    """The `data` list of gettemplate; entries that are not shaped right are skipped."""
    out = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("priTmplId"), str):
            continue
        content = str(item.get("content") or "")
        keywords: list[tuple[str, str]] = []
        for line in content.splitlines():
            for m in _KEYWORD.finditer(line):
                label = _LABEL_END.sub("", line[:m.start()]).strip()
                keywords.append((m.group(1), label))
        enums: dict[str, tuple[str, ...]] = {}
        for entry in item.get("keywordEnumValueList") or []:
            if not isinstance(entry, dict):
                continue
            code = str(entry.get("keywordCode") or "")
            key = _KEYWORD.sub(lambda m: m.group(1), code).removesuffix(".DATA").strip("{} ")
            values = entry.get("enumValueList") or []
            if key and isinstance(values, list):
                enums[key] = tuple(str(v) for v in values)
        labels = {label: key for key, label in keywords if label}
        examples: dict[str, str] = {}
        for line in str(item.get("example") or "").splitlines():
            ex = _EXAMPLE.match(line)
            if ex and ex.group(1) in labels:
                examples[labels[ex.group(1)]] = ex.group(2).strip()
        out.append(RemoteTemplate(
            template_id=item["priTmplId"], title=str(item.get("title") or ""),
            long_term=item.get("type") == 3, keywords=tuple(keywords), enums=enums,
            examples=examples))
    return out


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)  # templates.yaml is wrong
    warnings: list[str] = field(default_factory=list)  # works, but could be better


def compare(tpl: Template, remote: RemoteTemplate, app: str, at: Any) -> Findings:
    """Where templates.yaml's `tpl` and WeChat's template disagree. `at(*keys)` gives
    'templates.yaml:LINE' of a key path."""
    f = Findings()
    local = [i.key for i in tpl.items]
    theirs = remote.keys
    for key in theirs:
        if key not in local:
            f.problems.append(f"{at(tpl.name, 'data')}: {tpl.name}.data: lacks {key} "
                              f"({remote.label(key) or 'no label'}), a keyword of WeChat's "
                              f"template {remote.template_id}: every keyword needs a value")
    for key in local:
        if key not in theirs:
            close = difflib.get_close_matches(key, theirs, n=1)
            mean = f", did you mean {close[0]}?" if close else ""
            f.problems.append(f"{at(tpl.name, 'data', key)}: {tpl.name}.data.{key}: not a "
                              f"keyword of WeChat's template {remote.template_id}{mean} "
                              f"(its keywords: {', '.join(theirs) or 'none'})")
    for key, values in remote.enums.items():
        if key not in local:
            continue
        mine = tpl.enums.get(key)
        if mine is None:
            f.warnings.append(
                f"{at(tpl.name, 'data', key)}: {tpl.name}: {key} is an enum keyword; list "
                f"its values so rows are checked before sending: enums: {{{key}: "
                f"{_flow(values)}}}")
            continue
        for value in mine:
            if value not in values:
                f.problems.append(f"{at(tpl.name, 'enums', key)}: {tpl.name}.enums.{key}: "
                                  f"{value!r} is not one of WeChat's values "
                                  f"({', '.join(values)})")
    for item in tpl.items:
        allowed = remote.enums.get(item.key)
        if allowed and "{" not in item.source and item.source not in allowed:
            f.problems.append(f"{at(tpl.name, 'data', item.key)}: {tpl.name}.data.{item.key}: "
                              f"the constant {item.source!r} is not one of WeChat's values "
                              f"({', '.join(allowed)})")
    for key in tpl.enums:
        if key not in remote.enums and key in theirs:
            f.warnings.append(f"{at(tpl.name, 'enums', key)}: {tpl.name}.enums.{key}: WeChat "
                              "lists no enum values for this keyword")
    if remote.long_term and not tpl.long_term:
        f.warnings.append(f"{at(tpl.name)}: {tpl.name}: WeChat's template is long-term "
                          "(type 3): add long_term: true (it needs no grant per message)")
    if tpl.long_term and not remote.long_term:
        f.problems.append(f"{at(tpl.name, 'long_term')}: {tpl.name}.long_term: true, but "
                          f"WeChat's template {remote.template_id} is one-time (type 2): each "
                          "message needs the user's grant")
    return f


def missing_id(tpl: Template, app: str, listed: Sequence[RemoteTemplate], at: Any) -> str:
    ids = [r.template_id for r in listed]
    close = difflib.get_close_matches(tpl.template_id or "", ids, n=1)
    mean = f" (did you mean {close[0]}?)" if close else ""
    shown = ", ".join(f"{r.template_id} {r.title}".strip() for r in listed[:8]) or "none"
    return (f"{at(tpl.name, 'template_id')}: {tpl.name}.template_id: {tpl.template_id} is not "
            f"in app {app}'s template list{mean}; it has {len(listed)}: {shown}")


# ----------------------------------------------------------------- pull


def _snake(text: str) -> str:
    """'Order status' -> 'order_status'; '' for text with no ASCII letters."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    if not words or not any(c.isalpha() for c in "".join(words)):
        return ""
    name = "_".join(w.lower() for w in words)
    return name if name[0].isalpha() else ""


def _flow(values: Iterable[str]) -> str:
    # JSON strings are YAML flow scalars: any value (commas, colons, quotes) stays one item
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _comment(text: str) -> str:
    return " ".join(text.split())


def _unique(name: str, taken: set[str]) -> str:
    base, n = name, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


def entry_name(remote: RemoteTemplate, taken: set[str]) -> str:
    """A template name: the title in snake case when it is ASCII, else from the id."""
    name = _snake(remote.title)[:48]
    if not name:
        name = "tpl_" + re.sub(r"[^a-z0-9]", "", remote.template_id.lower())[:12]
    if not NAME_RE.match(name):
        name = "tpl"
    return _unique(name, taken)


def param_names(remote: RemoteTemplate) -> list[str]:
    """One param per keyword: its label in snake case when the label is ASCII (en_US
    templates), else the data key itself (thing2): rename them as your rows call them."""
    taken: set[str] = set()
    out = []
    for key, label in remote.keywords:
        name = _snake(label)[:40] or key
        if not PARAM_RE.match(name):
            name = key
        out.append(_unique(name, taken))
    return out


def pull_yaml(listed: Sequence[RemoteTemplate], *, app: str, known_ids: set[str],
              names: set[str], when: str) -> tuple[str, int]:
    """templates.yaml entries for the listed templates the file lacks; (text, count)."""
    lines = [f"# From app {app}'s template list (GET /wxaapi/newtmpl/gettemplate), {when}.",
             "# Rename each entry as your rows will name it (msg_list.template), rename its",
             "# params as your application sends them, then run `check --remote`."]
    count = 0
    taken = set(names)
    for remote in listed:
        if remote.template_id in known_ids:
            continue
        count += 1
        name = entry_name(remote, taken)
        params = param_names(remote)
        kind = ("long-term subscription (type 3): no grant needed per message"
                if remote.long_term else "one-time subscription (type 2): one message per "
                "grant the user gives")
        lines += ["", f"# {_comment(remote.title) or remote.template_id}: {kind}"]
        if remote.examples:
            lines.append("# example: " + "; ".join(
                f"{remote.label(k) or k}: {_comment(v)}" for k, v in remote.examples.items()))
        lines.append(f"{name}:")
        lines.append(f"  template_id: {json.dumps(remote.template_id)}")
        if app != "default":
            lines.append(f"  app: {app}")
        lines.append("  # page: pages/index/index        # the page the card opens (optional)")
        lines.append(f"  params: [{', '.join(params)}]")
        lines.append("  data:")
        for (key, label), param in zip(remote.keywords, params, strict=True):
            item = f"{key}: {json.dumps('{{ ' + param + ' }}')}"
            lines.append(f"    {item:<34} # {_comment(label) or key} ({_rule(key)})")
        if not remote.keywords:
            lines.append("    {}  # WeChat listed no keywords: fill them in")
        enums = {k: v for k, v in remote.enums.items() if k in remote.keys}
        if enums:
            lines.append("  enums:")
            lines += [f"    {k}: {_flow(v)}" for k, v in enums.items()]
        if remote.long_term:
            lines.append("  long_term: true")
    return "\n".join(lines) + "\n", count


def _rule(key: str) -> str:
    """'thing: up to 20 characters' (the type alone where its rule is long)."""
    try:
        kind = keyword_type(key)
    except KeywordError:
        return "not a keyword type Herald knows"
    return f"{kind}: {RULES[kind]}" if len(RULES[kind]) <= 40 else kind


__all__ = ["Findings", "RemoteTemplate", "compare", "entry_name", "missing_id", "param_names",
           "parse_list", "pull_yaml"]
