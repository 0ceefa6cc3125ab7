"""A row's params column as JSON, in types that show values as a person wrote them:
JSON `true` renders as `true`, `100.00` as `100.00`, an object or an array as compact
JSON. Bounded in size and depth; a name given twice is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from strict_json import DuplicateKey as _DuplicateKey
from strict_json import no_constants as _no_constants
from strict_json import unique_keys as _unique_keys
from templates.model import RenderError

PARAMS_MAX_BYTES = 64 * 1024
PARAMS_MAX_DEPTH = 32


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



__all__ = ["PARAMS_MAX_BYTES", "PARAMS_MAX_DEPTH", "JsonArray", "JsonBool", "JsonFloat",
           "JsonObject", "compact", "decode_params"]
