"""Rendering: one row's params through its template into its channel's request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaError

from channels.base import BuildError
from templates.decode import JsonBool, JsonFloat, decode_params
from templates.expressions import VALUE_MAX, _join
from templates.model import RenderError, Request, RowFields, Template, TemplateSet


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
        fields = RowFields(openid, phone, page, row_id)
        problem = tpl.kind.precheck(fields)  # e.g. no recipient: said before the params
        if problem is not None:
            raise RenderError(problem)
        data = _rendered(tpl, params)
        use_app = app or tpl.app or "default"
        try:
            built = tpl.kind.build(tpl, data, fields, use_app)
        except BuildError as exc:
            raise RenderError(str(exc)) from None
        return Request(app=app or tpl.app, template=tpl, built=built)
    except RenderError as exc:
        exc.row_id = row_id
        exc.template = template
        exc.args = (f"row {row_id} (template {template!r}): {exc.reason}",)
        raise


__all__ = ["render_row", "render_values"]
