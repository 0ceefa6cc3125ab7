"""templates.yaml: load and validate message templates, and turn a row into a request.

A template maps a row's params onto its channel's data (WeChat keywords, SMS template
parameters, a webhook's fields). Values are expressions over the params, rendered in
Jinja's sandbox with strict undefined: row content is data, never template code, and
a missing param is an error rather than an empty string. The expressions are a small
safe subset (names, literals, attribute and item access, filters from an allowlist,
concatenation, arithmetic on numbers, `a if c else b`), checked when the file loads:
nothing in templates.yaml can loop, call, or build a value big enough to hang the
daemon, and each rendered value is capped in length. Params keep the form a person
wrote them in: JSON `true` renders as `true`, `100.00` as `100.00`, an object or an
array as compact JSON.

What each channel needs beyond that (keyword rules for subscribe, URL form for
webhook, ...) is its own module's business (channels/); this module asks it.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment

import channels
from channels.base import BuildError, Built, ChannelKind
from config import Config
from strict_json import DuplicateKey as _DuplicateKey
from strict_json import no_constants as _no_constants
from strict_json import unique_keys as _unique_keys

log = logging.getLogger("herald.templates")

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COMMON_KEYS = ("channel", "template_id", "app", "params", "data", "fallback", "fallback_on")
PARAMS_MAX_BYTES = 64 * 1024
PARAMS_MAX_DEPTH = 32
EXPR_MAX = 500  # characters of one expression in templates.yaml
VALUE_MAX = 1000  # characters of one rendered value (WeChat's longest is 20)
DEFAULT_FALLBACK_ON = frozenset({"43101", "43107", "no_grant"})


# ----------------------------------------------------------------- params as people wrote them


class JsonBool(int):
    """JSON true/false: truthy like a bool, but shown as JSON writes it."""

    __slots__ = ()

    def __str__(self) -> str:
        return "true" if self else "false"

    __repr__ = __str__


class JsonFloat(float):
    """A JSON number with a fraction or exponent, shown exactly as written (100.00)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonFloat:
        self = super().__new__(cls, text)
        self.text = text
        return self

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def compact(value: Any) -> str:
    """A params value as compact JSON text, numbers exactly as they came."""
    if value is None:
        return "null"
    if isinstance(value, JsonBool | JsonFloat):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{compact(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(compact(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


class JsonObject(dict[str, Any]):
    __slots__ = ()

    def __str__(self) -> str:
        return compact(self)


class JsonArray(list[Any]):
    __slots__ = ()

    def __str__(self) -> str:
        return compact(self)


def _display(value: Any, depth: int) -> Any:
    if depth > PARAMS_MAX_DEPTH:
        raise RenderError(f"params are nested deeper than {PARAMS_MAX_DEPTH} levels")
    if isinstance(value, bool):
        return JsonBool(value)
    if isinstance(value, dict):
        return JsonObject((k, _display(v, depth + 1)) for k, v in value.items())
    if isinstance(value, list):
        return JsonArray(_display(v, depth + 1) for v in value)
    return value


# built once: json.loads with options builds a new decoder on every call
_PARAMS_DECODER = json.JSONDecoder(parse_float=JsonFloat, parse_constant=_no_constants,
                                   object_pairs_hook=_unique_keys)


def decode_params(row_params: Any) -> Any:
    """The params column as JSON, in display-preserving types; RenderError otherwise."""
    raw = getattr(row_params, "raw", None)  # SQLite text that is not UTF-8
    if isinstance(raw, bytes) or isinstance(row_params, bytes):
        data = raw if isinstance(raw, bytes) else row_params
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RenderError(f"params is not valid UTF-8 ({data[:40]!r})") from None
    else:
        text = row_params if row_params is not None else "[]"
    if not isinstance(text, str):
        text = str(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > PARAMS_MAX_BYTES:
        raise RenderError(f"params is {size} bytes, over the 64 KiB limit")
    try:
        value = _PARAMS_DECODER.decode(text)
    except RecursionError:
        raise RenderError(f"params are nested deeper than {PARAMS_MAX_DEPTH} levels") from None
    except _DuplicateKey as exc:
        raise RenderError(f"params names {exc.key!r} twice: which value is meant is "
                          "ambiguous") from None
    except ValueError as exc:
        raise RenderError(f"params is not valid JSON ({exc}): {text[:60]!r}") from None
    return _display(value, 0)


# ----------------------------------------------------------------- the expression subset

_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.Filter,
    nodes.Test, nodes.Concat, nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv,
    nodes.Mod, nodes.Neg, nodes.Pos, nodes.Compare, nodes.Operand, nodes.And, nodes.Or,
    nodes.Not, nodes.CondExpr, nodes.Getattr, nodes.Getitem, nodes.List, nodes.Tuple,
    nodes.Keyword,
)
_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "true", "false",
                    "even", "odd", "in", "eq", "ne", "lt", "le", "gt", "ge"})
_FORMAT_SPEC = re.compile(r"%(?:%|[-+ #0]{0,3}\d{0,2}(?:\.\d{1,2})?[sdifFeEgGxXo])")


def _replace(value: Any, old: Any, new: Any, count: int | None = None) -> str:
    s, old, new = str(value), str(old), str(new)
    n = s.count(old) if old else len(s) + 1
    if count is not None:
        n = min(n, max(0, int(count)))
    if len(s) + n * (len(new) - len(old)) > VALUE_MAX * 4:
        raise SecurityError("replace would build a value over Herald's length cap")
    return s.replace(old, new, -1 if count is None else max(0, int(count)))


def _format(value: Any, *args: Any) -> str:
    fmt = str(value)
    if _FORMAT_SPEC.sub("", fmt).count("%"):
        raise SecurityError("format: only short printf specs like %.2f are allowed")
    return fmt % args


_JINJA_FILTERS = SandboxedEnvironment().filters
_FILTERS: dict[str, Callable[..., Any]] = {
    name: _JINJA_FILTERS[name]
    for name in ("abs", "capitalize", "default", "d", "first", "float", "int", "join", "last",
                 "length", "count", "lower", "round", "string", "title", "trim", "truncate",
                 "upper", "tojson")
}
_FILTERS |= {"replace": _replace, "format": _format}


def _capped(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps jinja's pass_environment marks
    def filter_(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if isinstance(out, str) and len(out) > VALUE_MAX * 4:
            raise SecurityError(f"{fn.__name__} built a value over Herald's length cap")
        return out

    return filter_


class _Env(SandboxedEnvironment):
    """Jinja's sandbox (no private attributes, no unsafe calls) with the arithmetic that
    could build huge values refused at run time too."""

    intercepted_binops = frozenset({"*", "%", "+", "**", "//"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        numbers = isinstance(left, int | float) and isinstance(right, int | float)
        if operator == "**":
            raise SecurityError("** is not allowed in templates")
        if operator in ("*", "%", "//") and not numbers:
            raise SecurityError(f"{operator} works on numbers only in templates")
        if operator == "+" and not numbers:
            if len(str(left)) + len(str(right)) > VALUE_MAX * 4:
                raise SecurityError("+ would build a value over Herald's length cap")
        return super().call_binop(context, operator, left, right)


_env = _Env(undefined=StrictUndefined, autoescape=False)
_env.filters = {name: _capped(fn) for name, fn in _FILTERS.items()}
_env.tests = {name: fn for name, fn in _env.tests.items() if name in _TESTS}
_env.globals.clear()


def check_expression(expr: str) -> str | None:
    """Why `expr` is not in the allowed subset, or None. Also compiles it once."""
    if len(expr) > EXPR_MAX:
        return f"is {len(expr)} characters long (at most {EXPR_MAX})"
    try:
        ast = _env.parse(expr)
    except TemplateSyntaxError as exc:
        return f"bad expression {expr!r}: {exc}"
    for node in ast.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            what = type(node).__name__
            hint = {"Call": "calls are not allowed", "For": "loops are not allowed",
                    "If": "use `a if condition else b` inside {{ }}", "Pow": "** is not allowed",
                    "Dict": "dict literals are not allowed",
                    "Slice": "slices are not allowed"}.get(what, f"{what} is not allowed")
            return f"{expr!r}: {hint}"
        if isinstance(node, nodes.Filter) and node.name not in _FILTERS:
            close = difflib.get_close_matches(node.name, list(_FILTERS), n=1)
            mean = f", did you mean {close[0]!r}?" if close else ""
            return (f"{expr!r}: filter {node.name!r} is not allowed{mean} (allowed: "
                    f"{', '.join(sorted(_FILTERS))})")
        if isinstance(node, nodes.Filter) and node.name == "format":
            if not isinstance(node.node, nodes.Const) or not isinstance(node.node.value, str):
                return f"{expr!r}: format needs a literal format string, e.g. '%.2f'|format(x)"
            if _FORMAT_SPEC.sub("", node.node.value).count("%"):
                return f"{expr!r}: format allows short printf specs only (e.g. %.2f, %05d)"
        if isinstance(node, nodes.Test) and node.name not in _TESTS:
            return f"{expr!r}: test {node.name!r} is not allowed"
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            return f"{expr!r}: attributes starting with _ are not allowed"
    return None


# ----------------------------------------------------------------- errors and types


class TemplateError(Exception):
    """templates.yaml is unusable; `problems` are 'file:line: what is wrong' lines."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid templates in {path}:\n  - " + "\n  - ".join(problems))


class RenderError(Exception):
    """A row that cannot become a request. The row ends 'fail' with `reason`."""

    def __init__(self, reason: str, *, row_id: int | None = None, template: str | None = None,
                 unknown_template: bool = False):
        self.reason = reason
        self.row_id = row_id
        self.template = template
        self.unknown_template = unknown_template
        super().__init__(f"row {row_id} (template {template!r}): {reason}")


# Most values are text with {{ name }} in it. Those are rendered by joining the pieces
# (what Jinja would output: str() of each value), about three times cheaper than a
# Jinja render per keyword; anything else (filters, expressions) goes through the
# sandbox.
_SIMPLE_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_JINJA_SYNTAX = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")
Plan = tuple[tuple[str, str | None], ...]


def _simple_plan(expr: str) -> Plan | None:
    """(literal, variable) pairs when `expr` is only text and {{ name }}; else None."""
    parts = _SIMPLE_VAR.split(expr)
    literals, names = parts[0::2], parts[1::2]
    if any(_JINJA_SYNTAX.search(lit) or "\n" in lit for lit in literals):
        return None
    return tuple(zip(literals, [*names, None], strict=True))


def _join(plan: Plan, values: Mapping[str, Any]) -> str:
    out = []
    for literal, name in plan:
        out.append(literal)
        if name is not None:
            if name not in values:
                raise UndefinedError(f"{name!r} is undefined")
            out.append(str(values[name]))
    return "".join(out)


@dataclass(frozen=True)
class DataItem:
    key: str  # the keyword (subscribe), the field (webhook) or the position (sms)
    source: str
    compiled: Any
    plan: Plan | None


@dataclass(frozen=True)
class Template:
    name: str
    channel: str
    template_id: str | None
    app: str | None
    params: tuple[str, ...]
    items: tuple[DataItem, ...]
    line: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    fallback: tuple[str, ...] = ()
    fallback_on: frozenset[str] = DEFAULT_FALLBACK_ON
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    data_is_list: bool = False

    @property
    def kind(self) -> type[ChannelKind]:
        return channels.KINDS[self.channel]

    @property
    def long_term(self) -> bool:
        return bool(self.settings.get("long_term", False))

    # the subscribe settings, as attributes (older code and tests read them so)
    @property
    def page(self) -> str | None:
        return self.settings.get("page")

    @property
    def miniprogram_state(self) -> str:
        return str(self.settings.get("miniprogram_state", "formal"))

    @property
    def lang(self) -> str:
        return str(self.settings.get("lang", "zh_CN"))

    @property
    def data(self) -> Mapping[str, Any]:
        return {i.key: i.compiled for i in self.items}

    @property
    def sources(self) -> Mapping[str, str]:
        return {i.key: i.source for i in self.items}

    def falls_back_on(self, errcode: int | None, reason_code: str | None = None) -> bool:
        if not self.fallback:
            return False
        if errcode is not None and str(errcode) in self.fallback_on:
            return True
        return reason_code is not None and reason_code in self.fallback_on


@dataclass(frozen=True)
class TemplateSet:
    path: Path
    templates: Mapping[str, Template]
    by_id: Mapping[str, tuple[Template, ...]] = field(default_factory=dict)

    def lookup(self, name_or_id: str) -> Template:
        """The template a row's `template` column names (a name or a template_id)."""
        tpl = self.templates.get(name_or_id)
        if tpl is not None:
            return tpl
        found = self.by_id.get(name_or_id, ())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(t.name for t in found)
            raise RenderError(
                f"template_id {name_or_id!r} is declared by several templates ({names}): "
                "name the template instead"
            )
        close = difflib.get_close_matches(name_or_id, list(self.templates), n=1)
        mean = f" (did you mean {close[0]!r}?)" if close else ""
        raise RenderError(
            f"unknown template {name_or_id!r}: not a template name in {self.path.name} "
            f"nor a template_id one of them declares{mean}",
            unknown_template=True,
        )

    def names_and_ids(self) -> set[str]:
        return set(self.templates) | {t.template_id for t in self.templates.values()
                                      if t.template_id}


@dataclass(frozen=True)
class Request:
    """A row rendered into its channel's request, plus what the rendering had to change."""

    app: str | None
    template: Template
    built: Built

    @property
    def body(self) -> dict[str, Any]:
        return self.built.body

    @property
    def truncated(self) -> tuple[str, ...]:
        return self.built.truncated

    @property
    def recipient(self) -> str:
        return self.built.recipient


# ----------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML lets the last one win, so a second
    `order_status:` or a repeated data key would silently replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.get(key)
            except TypeError:
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of every mapping key, by path, for error messages."""
    out: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = str(k.value)
                out[path + (key,)] = k.start_mark.line + 1
                if len(path) < 4:
                    walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out.setdefault(path + (str(i),), v.start_mark.line + 1)
                if len(path) < 4:
                    walk(v, path + (str(i),))

    if root is not None:
        walk(root, ())
    return out


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
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no object tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(path, [f"{where}: not valid YAML: {problem}"]) from None
    lines = _key_lines(text)

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
    if problems:
        return None, problems
    enums = settings.get("enums") or {}
    return Template(
        name=name, channel=channel, template_id=tid.strip() if isinstance(tid, str) else None,
        app=app, params=tuple(params), items=tuple(items), line=int(at(name).split(":")[-1]),
        settings=settings, fallback=tuple(fallback), fallback_on=fallback_on,
        enums={k: tuple(v) for k, v in enums.items()}, data_is_list=kind.data_is_list,
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


# ----------------------------------------------------------------- rendering


def _params(row_params: Any, tpl: Template) -> dict[str, Any]:
    value = decode_params(row_params)
    if isinstance(value, list):
        if not value and not tpl.params:
            return {}  # the column's default '[]' for a template that takes no params
        if not tpl.params:
            raise RenderError(
                f"params is a JSON array but template {tpl.name!r} declares no params names: "
                "send a JSON object by name"
            )
        if len(value) > len(tpl.params):
            raise RenderError(
                f"params has {len(value)} values but template {tpl.name!r} takes "
                f"{len(tpl.params)} ({', '.join(tpl.params)})"
            )
        if len(value) < len(tpl.params):
            missing = tpl.params[len(value):]
            raise RenderError(
                f"params has {len(value)} values but template {tpl.name!r} takes "
                f"{len(tpl.params)}: missing {', '.join(missing)}"
            )
        return dict(zip(tpl.params, value, strict=True))
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    kind = {str: "a string", int: "a number", JsonFloat: "a number",
            JsonBool: "a boolean"}.get(type(value), "null")
    raise RenderError(f"params must be a JSON array or object, got {kind}")


def render_values(tpl: Template, values: Mapping[str, Any]) -> dict[str, str] | list[str]:
    """Each data item rendered over the params (text, capped in length)."""
    out: dict[str, str] = {}
    for item in tpl.items:
        try:
            text = _join(item.plan, values) if item.plan else item.compiled.render(values)
        except UndefinedError as exc:
            raise RenderError(f"{item.key}: {exc.message}; params given: "
                              f"{', '.join(values) or 'none'}") from None
        except SecurityError as exc:
            raise RenderError(f"{item.key}: refused by the sandbox: {exc}") from None
        except (JinjaError, TypeError, ValueError, ArithmeticError, LookupError,
                RecursionError) as exc:
            raise RenderError(f"{item.key}: {item.source!r} failed on these params: "
                              f"{type(exc).__name__}: {str(exc)[:120]}") from None
        if len(text) > VALUE_MAX:
            raise RenderError(f"{item.key}: the rendered value is {len(text)} characters, "
                              f"over Herald's cap of {VALUE_MAX}")
        out[item.key] = text
    return list(out.values()) if tpl.data_is_list else out


# A campaign sends the same params to many rows (only the recipient differs), so the
# data items rendered from one template and one params text are kept: the JSON decode,
# the checks and the renders run once per distinct params, not once per row. Keyed by
# id(template), with the template itself kept in the entry (so its id cannot be reused
# while the entry lives; a reload makes new Template objects, so edits are never served
# stale). Bounded: only short params are kept, and the cache is cleared when full
# (rows with params of their own each cost one lookup more, and a clear now and then).
RENDER_CACHE_MAX = 256
RENDER_CACHE_PARAMS = 2048  # characters: longer params are rendered each time (memory)
_RENDERED: dict[tuple[int, str], tuple[Template, dict[str, str] | list[str]]] = {}


def _rendered(tpl: Template, params: Any) -> dict[str, str] | list[str]:
    """The data items of `tpl` rendered over the params column (RenderError if it
    cannot be); a fresh copy each call, so a channel's build may not spoil the cache."""
    key = ((id(tpl), params) if type(params) is str and len(params) <= RENDER_CACHE_PARAMS
           else None)
    hit = _RENDERED.get(key) if key is not None else None
    if hit is not None and hit[0] is tpl:
        data = hit[1]
    else:
        values = _params(params, tpl)
        for k, v in values.items():
            if v is None:
                raise RenderError(f"param {k!r} is null")
        data = render_values(tpl, values)
        if key is not None:
            if len(_RENDERED) >= RENDER_CACHE_MAX:
                _RENDERED.clear()
            _RENDERED[key] = (tpl, data)
    return list(data) if isinstance(data, list) else dict(data)


@dataclass(frozen=True)
class RowFields:
    """The row columns a channel may read."""

    openid: str | None
    phone: str | None = None
    page: str | None = None
    row_id: int | None = None


def render_row(
    templates: TemplateSet,
    *,
    template: str | None,
    openid: str | None,
    params: Any,
    page: str | None = None,
    app: str | None = None,
    row_id: int | None = None,
    phone: str | None = None,
) -> Request:
    """Turn one row into its channel's request, or raise RenderError with a reason."""
    try:
        if template is None or not str(template).strip():
            raise RenderError("template is empty")
        tpl = templates.lookup(str(template).strip())
        if app and tpl.app and app != tpl.app:
            raise RenderError(
                f"row names app {app!r} but template {tpl.name!r} belongs to app {tpl.app!r}"
            )
        if tpl.channel == "subscribe" and (openid is None or not str(openid).strip()):
            raise RenderError("openid is empty")
        data = _rendered(tpl, params)
        use_app = app or tpl.app or "default"
        try:
            built = tpl.kind.build(tpl, data, RowFields(openid, phone, page, row_id), use_app)
        except BuildError as exc:
            raise RenderError(str(exc)) from None
        return Request(app=app or tpl.app, template=tpl, built=built)
    except RenderError as exc:
        exc.row_id = row_id
        exc.template = template
        exc.args = (f"row {row_id} (template {template!r}): {exc.reason}",)
        raise


# ----------------------------------------------------------------- the set in force

InUse = Callable[[Iterable[str]], Mapping[str, int]]


class TemplateHolder:
    """The templates in force. A broken edit is logged and the last good set stays; so
    does a new set that would drop a template waiting rows still name."""

    def __init__(self, path: Path | str, *, in_use: InUse | None = None,
                 context: LoadContext | None = None) -> None:
        self.path = Path(path)
        self.in_use = in_use
        self.context = context
        self.failures = 0  # reloads refused (metrics)
        self._lock = threading.Lock()
        self._current = load_templates(self.path, context=context)
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    @property
    def current(self) -> TemplateSet:
        return self._current

    def prepare(self, path: Path | str | None = None, context: LoadContext | None = None
                ) -> TemplateSet:
        """The set `path` (default: this holder's file, with its context) would bring
        in: loaded, checked, and refused (TemplateError) if it drops a template that
        waiting rows still name, whether the file changed in place or is another one.
        Changes nothing; adopt() puts it in force."""
        target = self.path if path is None else Path(path)
        fresh = load_templates(target, context=self.context if context is None else context)
        lost = self._current.names_and_ids() - fresh.names_and_ids()
        waiting = dict(self.in_use(sorted(lost))) if (lost and self.in_use) else {}
        waiting = {k: n for k, n in waiting.items() if n}
        if waiting:
            named = ", ".join(f"{k} ({n} rows)" for k, n in sorted(waiting.items()))
            raise TemplateError(target, [f"the new file drops templates that waiting "
                                         f"rows still name: {named}"])
        return fresh

    def adopt(self, fresh: TemplateSet, path: Path | str | None = None,
              context: LoadContext | None = None) -> None:
        """Put a prepare()d set in force; with `path`, this holder watches that file from
        now on (and `context` checks its next reloads). The in-use guard stays."""
        with self._lock:
            if path is not None:
                self.path = Path(path)
            if context is not None:
                self.context = context
            self._current = fresh
            self._mtime = self._stat()

    def reload(self) -> bool:
        """Load the file again. True if the new set is in force. Never raises."""
        mtime = self._stat()
        try:
            fresh = self.prepare()
        except TemplateError as exc:
            return self._refused(mtime, str(exc))
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            return self._refused(mtime, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._current = fresh
            self._mtime = mtime
        log.info("templates reloaded from %s: %d templates", self.path, len(fresh.templates))
        return True

    def _refused(self, mtime: float | None, why: str) -> bool:
        with self._lock:
            self._mtime = mtime  # do not re-report the same broken file every poll
            self.failures += 1
        log.error("templates not reloaded, keeping the last good set (%d templates): %s",
                  len(self._current.templates), why)
        return False

    def reload_if_changed(self) -> bool | None:
        """Reload when the file's mtime changed; None when it did not."""
        if self._stat() == self._mtime:
            return None
        return self.reload()


__all__ = ["DEFAULT_FALLBACK_ON", "JsonArray", "JsonBool", "JsonFloat", "JsonObject",
           "LoadContext", "RenderError", "Request", "RowFields", "Template", "TemplateError",
           "TemplateHolder", "TemplateSet", "check_expression", "compact", "decode_params",
           "load_templates", "parse_templates", "read_text", "render_row", "render_values"]
