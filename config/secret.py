"""Secret, the wrapper that keeps a credential out of every str() and repr(), and
mask_url for the one credential that lives inside ordinary text: a database password."""

from __future__ import annotations

import hmac
import re


class Secret:
    """Wraps a secret string. str() and repr() give '<secret>' so it can never leak into
    logs or exception messages. .reveal() returns the value. Equality compares values.
    Hashable."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        # object.__setattr__ because our own __setattr__ refuses all writes.
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "<secret>"

    def __repr__(self) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant-time: comparing secrets must not leak how many leading bytes match.
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash(self._value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Secret is immutable")


def mask_url(text: str) -> str:
    """The URL with any password replaced by ***, for messages and repr()."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)", text)
    if match is None or "@" not in match.group(2):
        return text
    userinfo, host = match.group(2).rsplit("@", 1)
    if ":" not in userinfo:
        return text
    user = userinfo.split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{host}{text[match.end():]}"
