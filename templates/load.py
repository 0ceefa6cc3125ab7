"""Loading templates.yaml: strict YAML, the common keys checked here, each channel's
own keys checked by its module (channels/), fallback chains checked for loops."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import meta

import channels
from config import Config
from strict_yaml import StrictLoader, key_lines
from templates.expressions import _env, _simple_plan, check_expression
from templates.model import DEFAULT_FALLBACK_ON, DataItem, Template, TemplateError, TemplateSet
from templates.spending import KEYS as SPENDING_KEYS
from templates.spending import check_groups as check_spending_groups
from templates.spending import parse as parse_spending

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COMMON_KEYS = ("channel", "template_id", "app", "params", "data", "fallback", "fallback_on",
               *SPENDING_KEYS)


@dataclass
class LoadContext:
    """What template checks may consult beyond the file: the config (apps, sms) and
    where relative paths and ${VAR}s resolve."""

    config: Config | None = None  # None: checks that need the config are skipped
    base_dir: Path = Path(".")
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)


def parse_templates(text: str, path: Path, *, context: LoadContext | None = None
                    ) -> TemplateSet:
    """Validate templates.yaml text; raise TemplateError listing every problem."""
    ctx = context or LoadContext(base_dir=path.parent)
    try:
        raw = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no object tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(path, [f"{where}: not valid YAML: {problem}"]) from None
    lines = key_lines(text)

    def at(*keys: str) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return f"{path.name}:{lines[keys[:n]]}"
        return f"{path.name}:1"

    if raw is None or raw == {}:
        raise TemplateError(path, [f"{path.name}:1: no templates (an empty file would fail "
                                   "every waiting row; give at least one template)"])
    if not isinstance(raw, dict):
        raise TemplateError(path, [f"{path.name}:1: expected a mapping of template names"])
    problems: list[str] = []
    result: dict[str, Template] = {}
    for name, spec in raw.items():
        name = str(name)
        if not NAME_RE.match(name):
            problems.append(f"{at(name)}: template name {name!r} must match {NAME_RE.pattern}")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{at(name)}: {name}: expected a mapping with template_id and data")
            continue
        tpl, found = _one(name, spec, at, ctx)
        problems.extend(found)
        if tpl is not None:
            result[name] = tpl
    problems.extend(_check_fallbacks(result, raw, at))
    problems.extend(check_spending_groups({n: t.spend for n, t in result.items()}, at))
    if problems:
        raise TemplateError(path, problems)
    by_id: dict[str, list[Template]] = {}
    for tpl in result.values():
        if tpl.template_id:
            by_id.setdefault(tpl.template_id, []).append(tpl)
    return TemplateSet(path, result, {k: tuple(v) for k, v in by_id.items()})


def _one(name: str, spec: dict[str, Any], at: Callable[..., str], ctx: LoadContext
         ) -> tuple[Template | None, list[str]]:
    problems: list[str] = []
    channel = spec.get("channel", channels.DEFAULT)
    if channel not in channels.KINDS:
        close = difflib.get_close_matches(str(channel), list(channels.KINDS), n=1)
        mean = f", did you mean {close[0]!r}?" if close else ""
        return None, [f"{at(name, 'channel')}: {name}.channel: {channel!r} is not a channel"
                      f"{mean} (channels: {', '.join(channels.KINDS)})"]
    kind = channels.KINDS[channel]
    allowed = COMMON_KEYS + kind.keys
    for key in spec:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            mean = f", did you mean {close[0]!r}?" if close else ""
            problems.append(f"{at(name, str(key))}: {name}.{key}: unknown key for a {channel} "
                            f"template{mean} (allowed: {', '.join(allowed)})")
    tid = spec.get("template_id")
    if isinstance(tid, int) and not isinstance(tid, bool):
        tid = str(tid)  # an SMS template id is a number
    if kind.needs_template_id and (not isinstance(tid, str) or not tid.strip()):
        problems.append(f"{at(name)}: {name}.template_id: required, a non-empty string")
    elif tid is not None and not isinstance(tid, str):
        problems.append(f"{at(name, 'template_id')}: {name}.template_id: must be a string")
    app = spec.get("app")
    if app is not None and not isinstance(app, str):
        problems.append(f"{at(name, 'app')}: {name}.app: {app!r} must be an app name")
    params = spec.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        problems.append(f"{at(name, 'params')}: {name}.params: must be a list of names")
        params = []
    for p in params:
        if not PARAM_RE.match(p):
            problems.append(f"{at(name, 'params')}: {name}.params: {p!r} is not a name")
    dupes = sorted({p for p in params if params.count(p) > 1})
    if dupes:
        problems.append(f"{at(name, 'params')}: {name}.params: repeated names {', '.join(dupes)}")
    data = spec.get("data")
    pairs: list[tuple[str, Any]] = []
    if kind.data_is_list:
        if not isinstance(data, list):
            problems.append(f"{at(name, 'data')}: {name}.data: required, a list of values "
                            f"(a {channel} template's parameters, in order)")
        else:
            pairs = [(str(i + 1), v) for i, v in enumerate(data)]
    elif not isinstance(data, dict) or not data:
        problems.append(f"{at(name)}: {name}.data: required, a mapping of key -> value")
    else:
        pairs = [(str(k), v) for k, v in data.items()]
    items: list[DataItem] = []
    sources: list[tuple[str, str]] = []
    for key, expr in pairs:
        kwhere = at(name, "data", key) if not kind.data_is_list else at(
            name, "data", str(int(key) - 1))
        if not isinstance(expr, str | int | float) or isinstance(expr, bool):
            problems.append(f"{kwhere}: {name}.data.{key}: value must be a string")
            continue
        expr = str(expr)
        bad = check_expression(expr)
        if bad is not None:
            problems.append(f"{kwhere}: {name}.data.{key}: {bad}")
            continue
        compiled = _env.from_string(expr)
        names = meta.find_undeclared_variables(_env.parse(expr))
        unknown = sorted(names - set(params))
        if params and unknown:
            problems.append(f"{kwhere}: {name}.data.{key}: uses {', '.join(unknown)}, "
                            f"not in params ({', '.join(params)})")
        items.append(DataItem(key, expr, compiled, _simple_plan(expr)))
        sources.append((key, expr))
    settings, found = kind.check(spec, name=name, data=sources, ctx=ctx)
    for key, message in found:
        head = key.split(".")
        problems.append(f"{at(name, *head)}: {name}.{key}: {message}")
    fallback = spec.get("fallback", [])
    if isinstance(fallback, str):
        fallback = [fallback]
    if not isinstance(fallback, list) or not all(isinstance(f, str) for f in fallback):
        problems.append(f"{at(name, 'fallback')}: {name}.fallback: must be a list of "
                        "template names")
        fallback = []
    on = spec.get("fallback_on")
    fallback_on = DEFAULT_FALLBACK_ON
    if on is not None:
        if not isinstance(on, list) or not all(
                isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))
                for x in on):
            problems.append(f"{at(name, 'fallback_on')}: {name}.fallback_on: must be a list "
                            "of errcodes or words (no_grant, or an SMS code)")
        else:
            fallback_on = frozenset(str(x) for x in on)
    spend, found_spend = parse_spending(spec, name)
    problems.extend(f"{at(name, key)}: {name}.{key}: {message}" for key, message in found_spend)
    if problems:
        return None, problems
    enums = settings.get("enums") or {}
    return Template(
        name=name, channel=channel, template_id=tid.strip() if isinstance(tid, str) else None,
        app=app, params=tuple(params), items=tuple(items), line=int(at(name).split(":")[-1]),
        settings=settings, fallback=tuple(fallback), fallback_on=fallback_on,
        enums={k: tuple(v) for k, v in enums.items()}, data_is_list=kind.data_is_list,
        spend=spend,
    ), []


def _check_fallbacks(result: Mapping[str, Template], raw: Mapping[str, Any],
                     at: Callable[..., str]) -> list[str]:
    problems: list[str] = []
    for tpl in result.values():
        for target in tpl.fallback:
            if target not in raw:
                close = difflib.get_close_matches(target, list(raw), n=1)
                mean = f", did you mean {close[0]!r}?" if close else ""
                problems.append(f"{at(tpl.name, 'fallback')}: {tpl.name}.fallback: {target!r} "
                                f"is not a template{mean}")
    # a loop would send the same news round and round the channels
    for start in result:
        path = [start]
        stack = [(start, iter(result[start].fallback))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                continue
            if nxt == start:
                problems.append(f"{at(start, 'fallback')}: {start}.fallback: loops back to "
                                f"itself ({' -> '.join([*path, nxt])})")
                stack.clear()
                break
            if nxt in result and nxt not in path:
                path.append(nxt)
                stack.append((nxt, iter(result[nxt].fallback)))
    return sorted(set(problems))


def read_text(path: Path) -> str:
    """The file's text; TemplateError for an unreadable or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TemplateError(path, [f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TemplateError(path, [f"{path.name}:{line}: not UTF-8 text (byte "
                                   f"0x{data[exc.start]:02x} at offset {exc.start}); "
                                   "save the file as UTF-8"]) from None


def load_templates(path: Path | str, *, context: LoadContext | None = None) -> TemplateSet:
    path = Path(path)
    return parse_templates(read_text(path), path,
                           context=context or LoadContext(base_dir=path.parent))


__all__ = ["COMMON_KEYS", "NAME_RE", "PARAM_RE", "LoadContext", "load_templates",
           "parse_templates", "read_text"]
