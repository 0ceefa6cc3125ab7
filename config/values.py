"""Value checks: each turns one raw YAML value into what Config holds, or says why not.

A check raises Invalid with the reason only; the walker puts the dotted key and the value
(as `shown()` prints it, never a secret) in front, so every message reads
"<key>: <value> <reason>". Checks hold no state: one instance may serve many keys.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import urlsplit

from db.urls import normalize as normalize_database_url

from .secret import Secret, mask_url


class Invalid(ValueError):
    """Why a value is refused. with_value=False: the reason is the whole message."""

    def __init__(self, reason: str, *, with_value: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.with_value = with_value


class EnvStr(str):
    """A string that came out of ${...} interpolation.

    Environment variables are always strings, so numeric settings accept these when
    they spell a number (`workers: ${HERALD_WORKERS:-16}`) while a quoted "16" typed in
    the file itself is still a type error.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Context:
    base_dir: Path  # relative paths resolve here: the config file's folder
    env: Mapping[str, str]


def shown(value: object, mask: Callable[[str], str] = str) -> str:
    """How a bad value appears in a message: never a whole structure, never too long."""
    if isinstance(value, Secret):
        return "<secret>"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    # Containers are described, not printed: a misplaced mapping could hold a secret.
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    text = repr(mask(str(value))) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def seconds_text(seconds: float) -> str:
    """A duration as a person writes it: 86400 -> 1d, 300 -> 5m, 2.5 -> 2.5s."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class Check:
    """Base of all checks. A key whose default is null accepts null without asking its
    check; other checks see null and decide (Listen: null disables a server).

    `kind` and limits() describe what the check allows, for config.yaml's comments and
    docs/configuration.md; they say what parse() enforces, in words."""

    kind: ClassVar[str] = "value"

    def parse(self, value: object, ctx: Context) -> Any:
        raise NotImplementedError

    def limits(self) -> str:
        """What the check allows beyond its kind, or "" (the help says it all)."""
        return ""

    def mask(self, text: str) -> str:
        """`text` fit for a message (a URL loses its password)."""
        return text


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, EnvStr) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return None


_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, EnvStr) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- durations

# Units are lower case only: "5M" could as well mean months as minutes.
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
NOT_A_DURATION: Final = "is not a duration (use 90s, 5m, 1h, 30d or a number of seconds)"


def duration_seconds(value: object) -> float:
    """Seconds (> 0) for 90s, 5m, 1h, 30d or a number; ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError(NOT_A_DURATION)
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            text = value.strip()
            match = _DURATION.fullmatch(text)
            if match is not None:
                seconds = float(match.group(1)) * _UNITS[match.group(2)]
            elif _NUMBER.fullmatch(text):
                seconds = float(text)
            else:
                raise ValueError(NOT_A_DURATION)
        else:
            raise ValueError(NOT_A_DURATION)
    except OverflowError:
        raise ValueError(NOT_A_DURATION) from None
    if not math.isfinite(seconds):
        raise ValueError(NOT_A_DURATION)
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


@dataclass(frozen=True, slots=True)
class Duration(Check):
    """Seconds from `low` to `high`, both inclusive; with forever=True the word
    `forever` is allowed too, and stands for None."""

    high: float  # every duration has a ceiling: a typo like 1e12 must not pass
    low: float = 0.0
    forever: bool = False

    kind: ClassVar[str] = "duration"

    def limits(self) -> str:
        span = (f"{seconds_text(self.low)} to {seconds_text(self.high)}" if self.low
                else f"up to {seconds_text(self.high)}")
        return f"{span}, or forever" if self.forever else span

    def parse(self, value: object, ctx: Context) -> float | None:
        if self.forever and isinstance(value, str) and value.strip() == "forever":
            return None
        try:
            seconds = duration_seconds(value)
        except ValueError as error:
            reason = str(error)
            if self.forever and reason == NOT_A_DURATION:
                reason = "is not a duration (use 90s, 5m, 1h, 30d, a number of seconds or forever)"
            raise Invalid(reason) from None
        if seconds < self.low:
            raise Invalid(f"is too short (must be at least {seconds_text(self.low)})")
        if seconds > self.high:
            raise Invalid(f"is too long (must be at most {seconds_text(self.high)})")
        return seconds


# --------------------------------------------------------------------------- numbers and words


@dataclass(frozen=True, slots=True)
class Integer(Check):
    low: int
    high: int

    kind: ClassVar[str] = "integer"

    def limits(self) -> str:
        return f"{self.low} to {self.high}"

    def parse(self, value: object, ctx: Context) -> int:
        number = _as_int(value)
        if number is None or not self.low <= number <= self.high:
            raise Invalid(f"is not allowed (an integer from {self.low} to {self.high})")
        return number


@dataclass(frozen=True, slots=True)
class Number(Check):
    """A number from `low` to `high` (above `low` when low_open); `unit` says what it counts."""

    low: float
    high: float
    low_open: bool = False
    nullable: bool = False
    unit: str = ""

    kind: ClassVar[str] = "number"

    def limits(self) -> str:
        return (f"above {self.low:g}, up to {self.high:g}" if self.low_open
                else f"{self.low:g} to {self.high:g}")

    def parse(self, value: object, ctx: Context) -> float | None:
        if value is None and self.nullable:
            return None
        number = _as_number(value)
        above_low = number is not None and (number > self.low if self.low_open
                                            else number >= self.low)
        if number is None or not above_low or number > self.high:
            raise Invalid(f"is not allowed ({self.expected})")
        return number

    @property
    def expected(self) -> str:
        if self.low_open:
            text = f"a number > {self.low:g} and at most {self.high:g}"
        else:
            text = f"a number from {self.low:g} to {self.high:g}"
        if self.nullable:
            text = "null or " + text
        return f"{text}, {self.unit}" if self.unit else text


@dataclass(frozen=True, slots=True)
class Bool(Check):
    kind: ClassVar[str] = "true or false"

    def parse(self, value: object, ctx: Context) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, EnvStr) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise Invalid("is not allowed (true or false)")


@dataclass(frozen=True, slots=True)
class Choice(Check):
    """One of `allowed`; upper=True accepts any case and stores upper case. `meanings`
    (empty, or one per choice) say what each does; one_of() writes the pairs."""

    allowed: tuple[str, ...]
    upper: bool = False
    meanings: tuple[str, ...] = ()

    kind: ClassVar[str] = "one of"

    def limits(self) -> str:
        said = [f"{choice} ({meaning})" if meaning else choice
                for choice, meaning in zip(self.allowed, self.meanings or [""] * len(self.allowed),
                                           strict=True)]
        return " | ".join(said) + (" (any case)" if self.upper else "")

    def parse(self, value: object, ctx: Context) -> str:
        if isinstance(value, str):
            text = str(value).strip()
            text = text.upper() if self.upper else text
            if text in self.allowed:
                return text
        extra = ", case-insensitive" if self.upper else ""
        raise Invalid(f"is not allowed (allowed: {', '.join(self.allowed)}{extra})")


def one_of(*plain: str, upper: bool = False, **explained: str) -> Choice:
    """A Choice of `plain` choices, or of choices each with what it means:
    one_of(retry="at-least-once", fail="at-most-once")."""
    if plain and explained:
        raise ValueError("one_of: every choice explained, or none")
    if plain:
        return Choice(plain, upper)
    return Choice(tuple(explained), upper, tuple(explained.values()))


@dataclass(frozen=True, slots=True)
class Pattern(Check):
    """A string matching `regex` in full; `noun` and `allowed` explain it."""

    regex: re.Pattern[str]
    noun: str
    allowed: str

    kind: ClassVar[str] = "text"

    def limits(self) -> str:
        return self.allowed

    def parse(self, value: object, ctx: Context) -> str:
        if not isinstance(value, str):
            raise Invalid("is not a string (quote it in YAML)")
        if not self.regex.fullmatch(value):
            raise Invalid(f"is not a valid {self.noun} (allowed: {self.allowed})")
        return str(value)


@dataclass(frozen=True, slots=True)
class Digits(Check):
    """A string of digits; YAML may give it as an integer (an id that looks numeric)."""

    noun: str
    example: str

    kind: ClassVar[str] = "text"

    def limits(self) -> str:
        return f"1 to 20 digits, quoted, e.g. {self.example}"

    def parse(self, value: object, ctx: Context) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = str(value)
        if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,20}", value.strip()):
            raise Invalid(f"is not a valid {self.noun} (allowed: 1 to 20 digits, "
                          f"e.g. {self.example})")
        return value.strip()


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True, slots=True)
class SecretText(Check):
    """A non-blank string, wrapped in Secret. `rule` may check its form; it must never
    put the value in its reason. `noun` names it in the message for an empty value."""

    noun: str
    rule: Check | None = None

    kind: ClassVar[str] = "secret"

    def limits(self) -> str:
        return self.rule.limits() if self.rule is not None else ""

    def parse(self, value: object, ctx: Context) -> Secret:
        text = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(text, str):
            raise Invalid("is not a string (quote it in YAML)")
        if not text.strip():
            raise Invalid(f"empty value (give {self.noun})", with_value=False)
        if self.rule is not None:
            self.rule.parse(text, ctx)
        return Secret(str(text))


_AES_KEY: Final = re.compile(r"[A-Za-z0-9+/]{43}")


@dataclass(frozen=True, slots=True)
class AesKey(Check):
    """WeChat's EncodingAESKey: 43 base64 characters, the AES-256 key once "=" is added."""

    kind: ClassVar[str] = "text"

    def limits(self) -> str:
        return "43 characters of A-Z, a-z, 0-9, + and /"

    def parse(self, value: object, ctx: Context) -> str:
        text = value if isinstance(value, str) else ""
        valid = _AES_KEY.fullmatch(text) is not None
        if valid:
            try:
                valid = len(base64.b64decode(text + "=", validate=True)) == 32
            except binascii.Error:
                valid = False
        if not valid:
            # No length or position in the reason: either would tell something of the key.
            raise Invalid("is not a valid EncodingAESKey (allowed: exactly 43 characters of "
                          "A-Z, a-z, 0-9, + and /, as the console generates it)")
        return text


# --------------------------------------------------------------------------- places


@dataclass(frozen=True, slots=True)
class FilePath(Check):
    """A file path (str or PathLike) resolved against the config file's folder."""

    kind: ClassVar[str] = "file path"

    def limits(self) -> str:
        return "relative to the config file's folder"

    def parse(self, value: object, ctx: Context) -> Path:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise Invalid("is not a file path")
        return (ctx.base_dir / str(value).strip()).resolve()


@dataclass(frozen=True, slots=True)
class HttpUrl(Check):
    """An http(s) URL without query; stored without a trailing slash, since callers
    append "/cgi-bin/..." to it."""

    example: str

    kind: ClassVar[str] = "URL"

    def limits(self) -> str:
        return "http or https, without query"

    def parse(self, value: object, ctx: Context) -> str:
        if isinstance(value, str):
            text = str(value).strip()
            parts = urlsplit(text)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            if (parts.scheme in ("http", "https") and parts.hostname and port_ok
                    and not parts.query and not parts.fragment and " " not in text):
                return text.rstrip("/")
        raise Invalid(f"is not allowed (an http or https URL without query, e.g. {self.example})")

    def mask(self, text: str) -> str:
        return mask_url(text)


@dataclass(frozen=True, slots=True)
class DatabaseUrl(Check):
    """A database URL; a relative SQLite path is made absolute against the config folder."""

    kind: ClassVar[str] = "database URL"

    def parse(self, value: object, ctx: Context) -> str:
        if not isinstance(value, str):
            raise Invalid("is not a database URL (e.g. sqlite:///herald.db)")
        try:
            return normalize_database_url(str(value), ctx.base_dir)
        except ValueError as error:
            raise Invalid(str(error)) from None

    def mask(self, text: str) -> str:
        return mask_url(text)


class Address(NamedTuple):
    text: str  # as written, e.g. "[::1]:9464"
    host: str  # without IPv6 brackets
    port: int


_LISTEN: Final = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<port6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def parse_address(value: object) -> Address | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    match = _LISTEN.fullmatch(text)
    if match is None:
        return None
    if match.group("v6") is not None:
        host, port_text = match.group("v6"), match.group("port6")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, port_text = match.group("host"), match.group("port")
        if not _HOSTNAME.fullmatch(host):
            return None
        if re.fullmatch(r"[\d.]+", host):  # looks like IPv4, so it must be one
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return None
    port = int(port_text)
    return Address(str(text), host, port) if 0 <= port <= 65535 else None


@dataclass(frozen=True, slots=True)
class Listen(Check):
    """host:port to listen on (kept as written; the model reads host and port from it), or
    null to switch the server off."""

    example: str  # e.g. "127.0.0.1:9464"
    what: str  # what null disables, e.g. "metrics"

    kind: ClassVar[str] = "host:port"

    def limits(self) -> str:
        return f"port 0 to 65535, [::1]:port for IPv6, or null (disables {self.what})"

    def parse(self, value: object, ctx: Context) -> str | None:
        if value is None:
            return None
        address = parse_address(value)
        if address is None:
            port = self.example.rsplit(":", 1)[1]
            raise Invalid(f"is not allowed (host:port with port 0..65535, e.g. {self.example} "
                          f"or [::1]:{port}; null disables {self.what})")
        return address.text


@dataclass(frozen=True, slots=True)
class QuotaReset:
    """When WeChat's daily quota resets: a wall-clock time at a fixed UTC offset."""

    hour: int
    minute: int
    utc_offset_minutes: int

    def next_after(self, dt: datetime) -> datetime:
        """The first reset instant strictly after the aware datetime `dt`, as aware UTC."""
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise ValueError("QuotaReset.next_after needs an aware datetime")
        # A fixed offset has no DST, so "the same time tomorrow" is exactly 24 hours on.
        zone = timezone(timedelta(minutes=self.utc_offset_minutes))
        local = dt.astimezone(zone)
        reset = local.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if reset <= local:
            reset += timedelta(days=1)
        return reset.astimezone(UTC)

    def __str__(self) -> str:
        sign = "-" if self.utc_offset_minutes < 0 else "+"
        hours, minutes = divmod(abs(self.utc_offset_minutes), 60)
        return f"{self.hour:02d}:{self.minute:02d}{sign}{hours:02d}:{minutes:02d}"


_QUOTA_RESET: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)([+-])(\d\d):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class QuotaResetTime(Check):
    """HH:MM±HH:MM, a wall-clock time at a fixed UTC offset."""

    kind: ClassVar[str] = "time"

    def limits(self) -> str:
        return "HH:MM±HH:MM, quoted"

    def parse(self, value: object, ctx: Context) -> QuotaReset:
        match = _QUOTA_RESET.fullmatch(value.strip()) if isinstance(value, str) else None
        offset = 0
        if match is not None:
            offset = int(match.group(4)) * 60 + int(match.group(5))
        if match is None or offset > 14 * 60:  # real UTC offsets span -12:00..+14:00
            hint = "" if isinstance(value, str) else "; quote it in YAML"
            raise Invalid("is not allowed (HH:MM followed by a UTC offset ±HH:MM up to 14:00, "
                          f"e.g. \"00:00+08:00\"{hint})")
        sign = match.group(3)
        return QuotaReset(int(match.group(1)), int(match.group(2)),
                          -offset if sign == "-" else offset)


__all__ = [
    "Address", "AesKey", "Bool", "Check", "Choice", "Context", "DatabaseUrl", "Digits",
    "Duration", "EnvStr", "FilePath",
    "HttpUrl", "Integer", "Invalid", "Listen", "NOT_A_DURATION", "Number", "Pattern",
    "QuotaReset", "QuotaResetTime", "SecretText", "duration_seconds", "one_of", "parse_address",
    "seconds_text", "shown",
]
