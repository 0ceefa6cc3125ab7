"""JSON read from outside as Herald reads it: an object that names a key twice is refused,
and so are NaN and Infinity (not JSON, though Python's json accepts them).

json.loads lets the last of two equal names win silently: which value the sender meant
is a guess, and two parsers may guess differently (one for the check, one for the use).
Pass these to json.loads / json.JSONDecoder as object_pairs_hook and parse_constant.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["DuplicateKey", "no_constants", "unique_keys"]


class DuplicateKey(ValueError):
    """An object names `key` twice. The key is from the document: say it only where the
    document's own content may be shown."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: the object as a dict, or DuplicateKey."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def no_constants(name: str) -> NoReturn:
    """parse_constant: NaN, Infinity and -Infinity are refused."""
    raise ValueError(f"{name} is not JSON")
