"""templates.yaml: load and validate message templates, and turn a row into a request.

A template maps a row's params onto WeChat's `data` keywords. Values are Jinja
expressions rendered in Jinja's sandbox with strict undefined: row content is data,
never template code, and a missing param is an error rather than an empty string.
Every rendered value is checked against WeChat's rule for its keyword type
(keywords.py) before any request is made.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from keywords import KeywordError, check_value, keyword_type

log = logging.getLogger("herald.templates")

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
TEMPLATE_KEYS = ("template_id", "page", "miniprogram_state", "lang", "app", "params", "data")
PARAMS_MAX_BYTES = 64 * 1024

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

# Most values are text with {{ name }} in it. Those are rendered by joining the pieces
# (what Jinja would output: str() of each value), about three times cheaper than a
# Jinja render per keyword; anything else (filters, expressions) goes through the
# sandbox.
_SIMPLE_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_JINJA_SYNTAX = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")


def _simple_plan(expr: str) -> tuple[tuple[str, str | None], ...] | None:
    """(literal, variable) pairs when `expr` is only text and {{ name }}; else None."""
    parts = _SIMPLE_VAR.split(expr)
    literals, names = parts[0::2], parts[1::2]
    if any(_JINJA_SYNTAX.search(lit) or "\n" in lit for lit in literals):
        return None
    return tuple(zip(literals, [*names, None], strict=True))


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


@dataclass(frozen=True)
class Template:
    name: str
    template_id: str
    page: str | None
    miniprogram_state: str
    lang: str
    app: str | None
    params: tuple[str, ...]
    data: Mapping[str, Any]  # keyword -> compiled jinja template
    sources: Mapping[str, str]  # keyword -> expression as written
    line: int
    plans: Mapping[str, Any] = field(default_factory=dict)  # keyword -> _simple_plan()


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
        raise RenderError(
            f"unknown template {name_or_id!r}: not a template name in {self.path.name} "
            "nor a template_id one of them declares",
            unknown_template=True,
        )


@dataclass(frozen=True)
class Request:
    """A row rendered into WeChat's send body, plus what the rendering had to change."""

    app: str | None
    template: Template
    body: dict[str, Any]
    truncated: tuple[str, ...] = ()


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """Line numbers of mapping keys, by path, for error messages."""
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
                if len(path) < 2:
                    walk(v, path + (key,))

    if root is not None:
        walk(root, ())
    return out


def parse_templates(text: str, path: Path) -> TemplateSet:
    """Validate templates.yaml text; raise TemplateError listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TemplateError(path, [f"{where}: not valid YAML: {exc}"]) from None
    lines = _lines(text)
    problems: list[str] = []

    def at(*keys: str) -> str:
        return f"{path.name}:{lines.get(tuple(keys), 1)}"

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TemplateError(path, [f"{path.name}:1: expected a mapping of template names"])
    result: dict[str, Template] = {}
    for name, spec in raw.items():
        name = str(name)
        where = at(name)
        if not NAME_RE.match(name):
            problems.append(f"{where}: template name {name!r} must match {NAME_RE.pattern}")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where}: {name}: expected a mapping with template_id and data")
            continue
        start = len(problems)
        for key in spec:
            if key not in TEMPLATE_KEYS:
                problems.append(
                    f"{at(name, str(key))}: {name}.{key}: unknown key "
                    f"(allowed: {', '.join(TEMPLATE_KEYS)})"
                )
        tid = spec.get("template_id")
        if not isinstance(tid, str) or not tid.strip():
            problems.append(f"{where}: {name}.template_id: required, a non-empty string")
        page = spec.get("page")
        if page is not None and (not isinstance(page, str) or not page.strip()):
            problems.append(f"{at(name, 'page')}: {name}.page: {page!r} must be a page path")
        state = spec.get("miniprogram_state", "formal")
        if state not in STATES:
            problems.append(
                f"{at(name, 'miniprogram_state')}: {name}.miniprogram_state: {state!r} "
                f"is not allowed (allowed: {', '.join(STATES)})"
            )
        lang = spec.get("lang", "zh_CN")
        if lang not in LANGS:
            problems.append(
                f"{at(name, 'lang')}: {name}.lang: {lang!r} is not allowed "
                f"(allowed: {', '.join(LANGS)})"
            )
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
            problems.append(
                f"{at(name, 'params')}: {name}.params: repeated names {', '.join(dupes)}"
            )
        data = spec.get("data")
        compiled: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if not isinstance(data, dict) or not data:
            problems.append(f"{where}: {name}.data: required, a mapping of keyword -> value")
            data = {}
        for key, expr in data.items():
            key = str(key)
            kwhere = at(name, "data")
            try:
                keyword_type(key)
            except KeywordError as exc:
                problems.append(f"{kwhere}: {name}.data.{key}: {exc}")
            if not isinstance(expr, (str, int, float)) or isinstance(expr, bool):
                problems.append(f"{kwhere}: {name}.data.{key}: value must be a string")
                continue
            expr = str(expr)
            try:
                ast = _env.parse(expr)
                compiled[key] = _env.from_string(expr)
            except TemplateSyntaxError as exc:
                problems.append(f"{kwhere}: {name}.data.{key}: bad expression {expr!r}: {exc}")
                continue
            sources[key] = expr
            names = meta.find_undeclared_variables(ast)
            unknown = sorted(names - set(params))
            if params and unknown:
                problems.append(
                    f"{kwhere}: {name}.data.{key}: uses {', '.join(unknown)}, "
                    f"not in params ({', '.join(params)})"
                )
        if len(problems) > start:
            continue
        result[name] = Template(
            name=name,
            template_id=tid.strip(),
            page=page,
            miniprogram_state=state,
            lang=lang,
            app=app,
            params=tuple(params),
            data=compiled,
            sources=sources,
            line=lines.get((name,), 1),
            plans={k: _simple_plan(v) for k, v in sources.items()},
        )
    if problems:
        raise TemplateError(path, problems)
    by_id: dict[str, list[Template]] = {}
    for tpl in result.values():
        by_id.setdefault(tpl.template_id, []).append(tpl)
    return TemplateSet(path, result, {k: tuple(v) for k, v in by_id.items()})


def load_templates(path: Path | str) -> TemplateSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(path, [f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_templates(text, path)


def _params(row_params: Any, tpl: Template) -> dict[str, Any]:
    text = row_params if row_params is not None else "[]"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text.encode("utf-8")) > PARAMS_MAX_BYTES:
        raise RenderError(f"params is {len(text.encode())} bytes, over the 64 KiB limit")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RenderError(f"params is not valid JSON ({exc}): {text[:60]!r}") from None
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
    kind = {str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null"
    )
    raise RenderError(f"params must be a JSON array or object, got {kind}")


def _join(plan: tuple[tuple[str, str | None], ...], values: Mapping[str, Any]) -> str:
    out = []
    for literal, name in plan:
        out.append(literal)
        if name is not None:
            if name not in values:
                raise UndefinedError(f"{name!r} is undefined")
            out.append(str(values[name]))
    return "".join(out)


def render_row(
    templates: TemplateSet,
    *,
    template: str | None,
    openid: str | None,
    params: Any,
    page: str | None = None,
    app: str | None = None,
    row_id: int | None = None,
) -> Request:
    """Turn one row into WeChat's request body, or raise RenderError with a reason."""
    try:
        if template is None or not str(template).strip():
            raise RenderError("template is empty")
        tpl = templates.lookup(str(template).strip())
        if openid is None or not str(openid).strip():
            raise RenderError("openid is empty")
        if app and tpl.app and app != tpl.app:
            raise RenderError(
                f"row names app {app!r} but template {tpl.name!r} belongs to app {tpl.app!r}"
            )
        values = _params(params, tpl)
        for k, v in values.items():
            if v is None:
                raise RenderError(f"param {k!r} is null")
        data: dict[str, dict[str, str]] = {}
        truncated: list[str] = []
        for key, compiled in tpl.data.items():
            try:
                plan = tpl.plans.get(key)
                text = _join(plan, values) if plan else compiled.render(values)
            except UndefinedError as exc:
                raise RenderError(f"{key}: {exc.message}; params given: "
                                  f"{', '.join(values) or 'none'}") from None
            except SecurityError as exc:
                raise RenderError(f"{key}: refused by the sandbox: {exc}") from None
            try:
                sent, cut = check_value(key, text)
            except KeywordError as exc:
                raise RenderError(str(exc)) from None
            if cut:
                truncated.append(key)
            data[key] = {"value": sent}
        body: dict[str, Any] = {"touser": str(openid).strip(), "template_id": tpl.template_id}
        target_page = page if page else tpl.page
        if target_page:
            body["page"] = target_page
        body["data"] = data
        body["miniprogram_state"] = tpl.miniprogram_state
        body["lang"] = tpl.lang
        return Request(app=app or tpl.app, template=tpl, body=body, truncated=tuple(truncated))
    except RenderError as exc:
        exc.row_id = row_id
        exc.template = template
        exc.args = (f"row {row_id} (template {template!r}): {exc.reason}",)
        raise


class TemplateHolder:
    """The templates in force. A broken edit is logged and the last good set stays."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._current = load_templates(self.path)
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    @property
    def current(self) -> TemplateSet:
        return self._current

    def reload(self) -> bool:
        """Load the file again. True if the new set is in force."""
        mtime = self._stat()
        try:
            fresh = load_templates(self.path)
        except TemplateError as exc:
            with self._lock:
                self._mtime = mtime  # do not re-report the same broken file every poll
            log.error("templates not reloaded, keeping the last good set (%d templates): %s",
                      len(self._current.templates), exc)
            return False
        with self._lock:
            self._current = fresh
            self._mtime = mtime
        log.info("templates reloaded from %s: %d templates", self.path, len(fresh.templates))
        return True

    def reload_if_changed(self) -> bool | None:
        """Reload when the file's mtime changed; None when it did not."""
        if self._stat() == self._mtime:
            return None
        return self.reload()
