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
webhook, ...) is its own module's business (channels/); load asks it.

The package, one job per module: decode (the params column), expressions (the safe
subset), model (the types), load (templates.yaml and its checks), render (a row to a
request), holder (the set in force, hot-reloaded).
"""

from __future__ import annotations

from templates.decode import JsonArray, JsonBool, JsonFloat, JsonObject, compact, decode_params
from templates.expressions import check_expression
from templates.holder import TemplateHolder
from templates.load import (
    NAME_RE,
    PARAM_RE,
    LoadContext,
    load_templates,
    parse_templates,
    read_text,
)
from templates.model import (
    DEFAULT_FALLBACK_ON,
    RenderError,
    Request,
    RowFields,
    Template,
    TemplateError,
    TemplateSet,
)
from templates.render import render_row, render_values

__all__ = ["DEFAULT_FALLBACK_ON", "NAME_RE", "PARAM_RE", "JsonArray", "JsonBool", "JsonFloat",
           "JsonObject", "LoadContext", "RenderError", "Request", "RowFields", "Template",
           "TemplateError", "TemplateHolder", "TemplateSet", "check_expression", "compact",
           "decode_params", "load_templates", "parse_templates", "read_text", "render_row",
           "render_values"]
