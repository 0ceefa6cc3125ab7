"""Checks and shapes that several channels share: URLs, appids, WeChat template data.

Kept apart from any one channel so that uniform, oa_template and webhook judge a URL
the same way, the three WeChat channels a page path, and the two official-account
channels shape `data` the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from channels.base import CheckContext

URL_MAX = 1024
APPID_RE = re.compile(r"wx[0-9A-Za-z]{16}")
# Official-account template keywords: new ones are typed like subscribe's (thing2),
# old ones are first / keyword1 / remark.
DATA_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def check_url(value: object, *, what: str = "an http(s) URL") -> str | None:
    """Why `value` is not an absolute http or https URL with a host, or None."""
    if not isinstance(value, str) or not value.strip():
        return f"must be {what}, e.g. https://shop.example/order"
    if len(value) > URL_MAX:
        return f"is {len(value)} characters long (at most {URL_MAX})"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        return f"{value!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} must start with http:// or https:// and name a host"
    if port == 0:
        return f"{value!r} names port 0"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (put the secret in secret:)"
    return None


def check_page(value: object) -> str | None:
    """Why `value` is not a mini program page path (None: no page, which is fine)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        return f"{value!r} must be a page path (e.g. pages/order/detail?id=1)"
    return None


def check_appid(value: object) -> str | None:
    if not isinstance(value, str) or not APPID_RE.fullmatch(value):
        return f"{value!r} is not an appid (wx and 16 letters or digits)"
    return None


def check_data_keys(data: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Problems with the data keys of an official-account template."""
    return [(f"data.{key}", f"{key!r} is not a template keyword (letters, digits, _)")
            for key, _ in data if not DATA_KEY_RE.fullmatch(key)]


def wechat_data(data: Mapping[str, str] | list[str]) -> dict[str, dict[str, str]]:
    """Rendered values as WeChat's {key: {"value": text}}."""
    if not isinstance(data, Mapping):
        raise TypeError("a WeChat template's data is a mapping")
    return {key: {"value": text} for key, text in data.items()}


def app_kind(ctx: CheckContext, name: str) -> tuple[str | None, str | None]:
    """(kind, appid) of a configured app, or (None, None) when the config is not known
    here or has no such app."""
    if ctx.config is None or name not in ctx.config.apps:
        return None, None
    app = ctx.config.apps[name]
    return app.kind, app.appid


def configured_apps(ctx: CheckContext) -> list[str] | None:
    """Names of the configured apps, or None when the config is not known here."""
    return list(ctx.config.apps) if ctx.config is not None else None


__all__ = ["APPID_RE", "app_kind", "check_appid", "check_data_keys", "check_page", "check_url",
           "configured_apps", "wechat_data"]
