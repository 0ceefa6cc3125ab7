"""Column values as the console shows them, read so that no value can fail a page.

Applications write msg_list with plain SQL, so a column may hold anything its type
lets a database keep (db/decode.py): each value is decoded on its own, and one that
cannot be read is shown quoted as Bad instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db.decode import shown, text_or_shown, ts_or_none


@dataclass(frozen=True, slots=True)
class Bad:
    """A stored value that cannot be read as its column's type."""

    shown: str

    def __str__(self) -> str:
        return f"unreadable: {self.shown}"


def ts(value: object) -> datetime | Bad | None:
    if value is None:
        return None
    got = ts_or_none(value)
    return got if got is not None else Bad(shown(value))


def txt(value: object) -> str | None:
    return text_or_shown(value)


def num(value: object) -> int | Bad | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return Bad(shown(value))
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isascii() \
            and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return Bad(shown(value))


def count(value: object) -> int:
    """An aggregate's COUNT/SUM: drivers give int, Decimal (MySQL SUM) or None."""
    try:
        return int(value or 0)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


__all__ = ["Bad", "count", "num", "ts", "txt"]
