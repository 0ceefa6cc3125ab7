"""WeChat's rules for subscribe-message keyword values, checked before anything is sent.

Every key of a template's `data` names its value's type in its prefix (`thing2` is a
`thing`, `character_string8` a `character_string`), and WeChat refuses the whole message
with errcode 47003 when any one value breaks its type's rule. Herald checks each rendered
value here first, so a bad template fails locally with a reason a person can act on; the
local sandbox server decides when to answer 47003 with this same module, so the two can
never disagree. That is why everything here is a pure function of its input: no clock, no
locale, and only ASCII digits and letters where the rules say digits and letters.
"""

import functools
import re
import unicodedata
from datetime import date

__all__ = ["KEYWORD_TYPES", "KEY_RE", "RULES", "KeywordError", "check_value", "keyword_type"]

# The rule texts end up inside error messages and docs, so each one says what a valid value
# looks like rather than how this module tests it.
RULES: dict[str, str] = {
    "thing": "up to 20 characters",
    "number": "up to 32 digits, an optional leading + or -, at most one decimal point",
    "letter": "up to 32 ASCII letters",
    "symbol": "up to 5 punctuation or symbol characters",
    "character_string": "up to 32 digits, ASCII letters or symbols, no spaces",
    "time": "a 24-hour time HH:MM or HH:MM:SS, optionally after a date; a range joins two with ~",
    "date": (
        "a real date YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD or YYYY年M月D日, "
        "optionally followed by a 24-hour time; a range joins two with ~"
    ),
    "amount": (
        "one optional currency sign (¥ ￥ $ € £), up to 10 digits, "
        "at most 2 decimal places, may end in 元"
    ),
    "phone_number": "up to 17 digits and symbols (+ - ( ) and space count), at least one digit",
    "car_number": "up to 8 ASCII letters and digits; the first and last may be Chinese",
    "name": (
        "Chinese characters, ASCII letters, spaces or symbols: "
        "up to 10 if any is Chinese, else up to 20"
    ),
    "phrase": "up to 5 Chinese characters",
    "enum": "one of the template's enum values (keywordEnumValueList)",
}

KEYWORD_TYPES: frozenset[str] = frozenset(RULES)

# re.ASCII keeps \d to 0-9: with Unicode \d, 'thing٢' would parse as a key WeChat rejects.
# The lazy +? cannot stop early, because [a-z_] and \d never match the same character and
# the match is anchored at both ends: 'character_string8' splits only one way.
KEY_RE: re.Pattern[str] = re.compile(r"^([a-z_]+?)(\d+)$", re.ASCII)


class KeywordError(ValueError):
    """A value (or key) that WeChat would refuse. str(e) is a reason a person can act on.

    `key` is the data key as given. `value` is the value as received, converted to text;
    it is None when the key itself is at fault or the value was None.
    """

    key: str
    value: str | None

    def __init__(self, message: str, key: str, value: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value

    def __reduce__(self) -> tuple[type["KeywordError"], tuple[str, str, str | None]]:
        # The default reduce would rebuild from self.args, i.e. the message alone, which
        # drops key and value when the error crosses a process boundary.
        return (type(self), (str(self), self.key, self.value))


@functools.lru_cache(maxsize=1024)  # keys come from templates: a small, fixed set
def keyword_type(key: str) -> str:
    """'thing2' -> 'thing'. Raises KeywordError if the key does not parse or names no type."""
    # fullmatch, not match: '$' also matches before a trailing newline, so 'thing2\n'
    # would otherwise pass.
    match = KEY_RE.fullmatch(key) if isinstance(key, str) else None
    if match is None or match.group(1) not in KEYWORD_TYPES:
        types = ", ".join(sorted(KEYWORD_TYPES))
        raise KeywordError(
            f"data key {_shown(key)} does not name a keyword type "
            f"(expected <type><number>, e.g. thing2; types: {types})",
            str(key),
        )
    return match.group(1)


def check_value(key: str, value: object, *, truncate: bool = True,
                choices: tuple[str, ...] | None = None) -> tuple[str, bool]:
    """Check one rendered value for data key `key` (see _check_value). A text value's
    verdict is remembered: a campaign checks the same few values for thousands of rows,
    and the check is a pure function of its arguments (an error is not remembered)."""
    if type(value) is str:
        return _check_text(key, value, truncate, choices)
    return _check_value(key, value, truncate=truncate, choices=choices)


@functools.lru_cache(maxsize=1024)  # values are at most 1,000 characters: a few MB at worst
def _check_text(key: str, value: str, truncate: bool,
                choices: tuple[str, ...] | None) -> tuple[str, bool]:
    return _check_value(key, value, truncate=truncate, choices=choices)


def _check_value(key: str, value: object, *, truncate: bool = True,
                 choices: tuple[str, ...] | None = None) -> tuple[str, bool]:
    """Check one rendered value for data key `key`. Returns (value_to_send, was_truncated).

    `choices`: an enum keyword's allowed values (None: not known here, so any value
    goes and WeChat has the last word).

    Surrounding whitespace is stripped and the stripped text is what gets sent. Over-long
    `thing` and `name` values are cut to their limit when `truncate` is true (Herald's
    policy: deliver a shortened card rather than nothing); with truncate=False, which is
    what WeChat itself accepts and so the sandbox's view, they raise like any other error.
    """
    kind = keyword_type(key)
    # bool is an int, so str() would quietly send 'True': almost certainly a template bug.
    if isinstance(value, bool):
        raise KeywordError(
            f"{key}: {value!r} is a boolean, not a valid {kind} ({RULES[kind]})", key, str(value)
        )
    if value is None:
        raise KeywordError(f"{key}: value is empty", key, None)
    received = value if isinstance(value, str) else str(value)

    text = received
    if kind in _FREE_TEXT:
        # A card has no line breaks, so a newline (or any control character) becomes the
        # one space a reader would expect between the words it separated.
        text = _CONTROL_RUN.sub(" ", text)
    text = text.strip()
    if not text:
        raise KeywordError(f"{key}: value is empty", key, received)

    try:
        if kind == "enum":
            if choices is not None and text not in choices:
                shown = ", ".join(repr(c) for c in choices[:8])
                raise _Invalid(f"not one of {shown}{' ...' if len(choices) > 8 else ''}")
        elif kind in _FREE_TEXT:
            limit = _FREE_TEXT_CHECKS[kind](text)
            if len(text) > limit:
                if truncate:
                    # rstrip so that a cut landing just after a space still sends a stripped
                    # value; the first character is never a space, so this cannot empty it.
                    return text[:limit].rstrip(), True
                raise _Invalid(f"{len(text)} characters")
        else:
            _VALIDATORS[kind](text)
    except _Invalid as invalid:
        detail = f": {invalid.detail}" if invalid.detail else ""
        raise KeywordError(
            f"{key}: {_shown(text)} is not a valid {kind}{detail} ({RULES[kind]})",
            key,
            received,
        ) from None
    return text, False


# --- internals -------------------------------------------------------------------------


class _Invalid(Exception):
    """Raised by a validator; check_value turns it into a KeywordError naming key and rule."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


def _shown(obj: object) -> str:
    """repr() of a value for a message, cut to 40 characters so one bad row stays readable."""
    text = repr(obj)
    return text if len(text) <= 40 else text[:39] + "…"


# Unicode category Cc is exactly these code points; U+2028/U+2029 are line and paragraph
# separators, i.e. newlines by another name. Spelled out rather than asking unicodedata,
# so runs are found by one regex pass.
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

_SURROGATE = re.compile("[\ud800-\udfff]")  # Unicode category Cs, found in one pass
_CJK_CLASS = r"\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CLASS}]")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_DIGITS = frozenset("0123456789")


def _is_cjk(ch: str) -> bool:
    return _CJK.match(ch) is not None


def _is_symbol(ch: str) -> bool:
    # One definition of "symbol" for every type that allows symbols: punctuation (P*) and
    # symbols (S*), which covers ASCII punctuation, full-width marks and emoji alike.
    return unicodedata.category(ch)[0] in "PS"


def _check_length(text: str, limit: int, unit: str = "characters") -> None:
    if len(text) > limit:
        raise _Invalid(f"{len(text)} {unit}")


# thing and name are free text: their checks validate the characters and return the length
# limit, because check_value, not the validator, decides between truncating and refusing.


def _thing_limit(text: str) -> int:
    # Lone surrogates (e.g. from bytes decoded with surrogateescape) cannot be encoded as
    # UTF-8, so no request carrying one can reach WeChat intact.
    if _SURROGATE.search(text):
        raise _Invalid("contains a lone surrogate")
    return 20


def _name_limit(text: str) -> int:
    for ch in text:
        if not (
            _is_cjk(ch)
            or ch in _ASCII_LETTERS
            or unicodedata.category(ch) == "Zs"
            or _is_symbol(ch)
        ):
            raise _Invalid(f"{ch!r} is not allowed")
    return 10 if _CJK.search(text) else 20


_FREE_TEXT_CHECKS = {"thing": _thing_limit, "name": _name_limit}
_FREE_TEXT = frozenset(_FREE_TEXT_CHECKS)


_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def _number(text: str) -> None:
    if not _NUMBER.fullmatch(text):
        raise _Invalid()
    # The sign and the point are not digits, so they do not count toward the 32.
    digits = sum(ch in _ASCII_DIGITS for ch in text)
    if digits > 32:
        raise _Invalid(f"{digits} digits")


def _letter(text: str) -> None:
    if not all(ch in _ASCII_LETTERS for ch in text):
        raise _Invalid()
    _check_length(text, 32, "letters")


def _symbol(text: str) -> None:
    if not all(_is_symbol(ch) for ch in text):
        raise _Invalid()
    _check_length(text, 5)


def _character_string(text: str) -> None:
    if not all(ch in _ASCII_DIGITS or ch in _ASCII_LETTERS or _is_symbol(ch) for ch in text):
        raise _Invalid()
    _check_length(text, 32)


_AMOUNT = re.compile(r"[¥￥$€£]?([0-9]+)(?:\.([0-9]{1,2}))?元?")


def _amount(text: str) -> None:
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise _Invalid()
    # Decimal places count toward the 10 digits, as they do for number's 32.
    digits = len(match.group(1)) + len(match.group(2) or "")
    if digits > 10:
        raise _Invalid(f"{digits} digits")


def _phone_number(text: str) -> None:
    if not all(ch in _ASCII_DIGITS or ch == " " or _is_symbol(ch) for ch in text):
        raise _Invalid()
    if not any(ch in _ASCII_DIGITS for ch in text):
        raise _Invalid("no digit")
    _check_length(text, 17)


# The ASCII middle is required: without it '粤挂' would pass as a plate.
_CAR_NUMBER = re.compile(f"[{_CJK_CLASS}]?[A-Za-z0-9]+[{_CJK_CLASS}]?")


def _car_number(text: str) -> None:
    if not _CAR_NUMBER.fullmatch(text):
        raise _Invalid()
    _check_length(text, 8)


def _phrase(text: str) -> None:
    if not all(_is_cjk(ch) for ch in text):
        raise _Invalid()
    _check_length(text, 5)


# Dates and times. Only '~' joins a range and only ASCII digits count; each side of a range
# must be a valid value of the type on its own.
_DATE_DASHED = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})")
_DATE_CHINESE = re.compile(r"([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日")
_TIME = re.compile(r"([0-9]{1,2}):([0-5][0-9])(?::([0-5][0-9]))?")


def _moment(text: str) -> tuple[bool, bool]:
    """Parse one point in time; returns (has_date, has_time) or raises _Invalid."""
    if (dashed := _DATE_DASHED.match(text)) is not None:
        year, month, day = dashed.group(1, 3, 4)
        rest = text[dashed.end() :]
        # The rule asks for a space here; without one '2026-11-2810:00' reads two ways.
        if rest and not rest.startswith(" "):
            raise _Invalid()
    elif (chinese := _DATE_CHINESE.match(text)) is not None:
        year, month, day = chinese.groups()
        rest = text[chinese.end() :]
    else:
        _clock(text)
        return False, True
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        raise _Invalid(f"no such day {year}-{month}-{day}") from None
    # At most one space: the rule says "a space", so a second one is refused, not guessed at.
    rest = rest.removeprefix(" ")
    if not rest:
        return True, False
    _clock(rest)
    return True, True


def _clock(text: str) -> None:
    time = _TIME.fullmatch(text)
    if time is None:
        raise _Invalid()
    if int(time.group(1)) > 23:
        raise _Invalid(f"no hour {time.group(1)} on a 24-hour clock")


def _moments(text: str) -> list[tuple[bool, bool]]:
    parts = text.split("~")
    if len(parts) > 2:
        raise _Invalid()
    # Spaces around the ~ are allowed: '10:00 ~ 12:00' reads the same as '10:00~12:00'.
    parts = [part.strip() for part in parts]
    if not all(parts):
        raise _Invalid()
    return [_moment(part) for part in parts]


def _time(text: str) -> None:
    if not all(has_time for _, has_time in _moments(text)):
        raise _Invalid()


def _date(text: str) -> None:
    if not all(has_date for has_date, _ in _moments(text)):
        raise _Invalid()


_VALIDATORS = {
    "number": _number,
    "letter": _letter,
    "symbol": _symbol,
    "character_string": _character_string,
    "time": _time,
    "date": _date,
    "amount": _amount,
    "phone_number": _phone_number,
    "car_number": _car_number,
    "phrase": _phrase,
}
