"""The safe expression language of templates.yaml's values.

Values are expressions over the params, rendered in Jinja's sandbox with strict
undefined: row content is data, never template code, and a missing param is an error
rather than an empty string. The expressions are a small safe subset (names, literals,
attribute and item access, filters from an allowlist, concatenation, arithmetic on
numbers, `a if c else b`), checked when the file loads: nothing in templates.yaml can
loop, call, or build a value big enough to hang the daemon.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

EXPR_MAX = 500  # characters of one expression in templates.yaml
VALUE_MAX = 1000  # characters of one rendered value (WeChat's longest is 20)

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


__all__ = ["EXPR_MAX", "VALUE_MAX", "Plan", "check_expression"]
