"""Times as people read them: "3 min", "2 h 5 min", "in 30 s", "2026-11-28 10:30:00 UTC"."""

from __future__ import annotations

from datetime import datetime


def age(seconds: float) -> str:
    """A duration in at most two units: '4 s', '3 min', '2 h 5 min', '3 d 2 h'."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"  # seconds are noise beside minutes
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def cut(text: str, width: int) -> str:
    """`text` in at most `width` characters: whole, or cut with an ellipsis, at a word's
    end when one is near (a reader must see that something was left out)."""
    if len(text) <= width:
        return text
    head = text[:width - 1]
    space = head.rfind(" ")
    if space >= width * 2 // 3:
        head = head[:space]
    return head.rstrip(" ,;:") + "…"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 row', '2 rows', '0 rows'."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def stamp(dt: object) -> str:
    """'2026-11-28 10:30:00 UTC'; '-' when unknown; a value that is no time as it is
    (readers show what a row holds, they never raise on it)."""
    if dt is None:
        return "-"
    if not isinstance(dt, datetime):
        return str(dt)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(dt: object, now: datetime) -> str:
    """'3 min ago' / 'in 2 h 5 min' / 'now'."""
    if not isinstance(dt, datetime):
        return "time unknown"
    delta = (dt - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {age(delta)}" if delta > 0 else f"{age(delta)} ago"


def when(dt: object, now: datetime) -> str:
    """'2026-11-28 10:30:00 UTC (3 min ago)'."""
    if not isinstance(dt, datetime):
        return stamp(dt)
    return f"{stamp(dt)} ({relative(dt, now)})"


def iso(dt: datetime | None) -> str | None:
    """For --json: ISO 8601 in UTC, or null."""
    return dt.isoformat() if dt is not None else None


__all__ = ["age", "cut", "iso", "plural", "relative", "stamp", "when"]
