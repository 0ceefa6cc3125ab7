"""HTML pages from Jinja2 templates in web/console/pages/, autoescaped.

Autoescaping is on for every template, and nothing the database or a request holds is
ever marked safe: a template name like <script> shows as text. Filters turn values into
what people read (UTC times with their age, unreadable values quoted, big numbers
grouped); the templates never format anything themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from web.console.values import Bad

PAGES = Path(__file__).resolve().parent / "pages"


def _when(value: object) -> Markup:
    """A UTC time as <time> with its age; Bad and None as such."""
    if value is None:
        return Markup('<span class="none">—</span>')
    if isinstance(value, Bad):
        return bad(value)
    if not isinstance(value, datetime):
        return escape(str(value))
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    return Markup('<time datetime="{iso}" title="{age}">{text}</time>').format(
        iso=utc.isoformat(), age=age(utc), text=text)


def age(value: object, now: datetime | None = None) -> str:
    if not isinstance(value, datetime):
        return ""
    now = now or datetime.now(UTC)
    seconds = (now - value).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 90:
        text = f"{seconds:.0f}s"
    elif seconds < 5400:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 2 * 86400:
        text = f"{seconds / 3600:.1f}h"
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if ahead else f"{text} ago"


def bad(value: Bad) -> Markup:
    return Markup('<span class="bad" title="this value cannot be read">unreadable: '
                  '<code>{}</code></span>').format(value.shown)


def show(value: object) -> Markup:
    """Any column value: None as a dash, Bad quoted, the rest as text."""
    if value is None:
        return Markup('<span class="none">—</span>')
    if isinstance(value, Bad):
        return bad(value)
    if isinstance(value, datetime):
        return _when(value)
    return escape(str(value))


def number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}"


def short(value: object, size: int = 80) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= size else text[: size - 1] + "…"


def duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return str(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(PAGES)), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, age=age, show=show, number=number, short=short,
                       duration=duration)
    env.globals.update(Bad=Bad)
    return env


class Renderer:
    def __init__(self) -> None:
        self.env = environment()

    def page(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)


__all__ = ["Renderer", "age", "environment", "show"]
