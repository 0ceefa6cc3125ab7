"""Read msg_list rows one at a time, so that one row nobody can read fails alone.

Applications write msg_list with plain SQL from any language, and a database keeps
what it is given: SQLite a send_at of '1x' or raw bytes that are not UTF-8, MySQL
(with sql_mode = '') a zero date. Reading such a row through the models would raise
in the middle of a claim or a status report and stop everything. Here each column
of each row is decoded on its own: a row with a column that cannot be read comes
back as a BadRow naming the column and the value, and the caller fails that row
(dispatch) or shows it as unreadable (status, console) while every other row goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from db.models import parse_utc

VALUE_SHOWN = 60  # characters of a bad value quoted in an error


@dataclass(slots=True)
class Row:
    """A claimed msg_list row, decoded (fields in CLAIM_COLUMNS' order)."""

    id: int
    attempts: int
    template: str
    app: str | None
    openid: str
    phone: str | None
    params: str
    page: str | None
    priority: int
    send_at: datetime
    expire_at: datetime | None
    dedup_key: str | None
    errcode: int | None
    error: str | None
    parent_id: int | None
    status: str
    claimed_by: str | None
    lease_until: datetime | None
    updated_at: datetime | None
    collapse_key: str | None


@dataclass(slots=True)
class KeyedRow(Row):
    """A claimed row with a collapse_key, and its created_at (its collapse window counts
    from it). Read for such rows only (db/spending.py): the claim of rows without a key
    decodes nothing more than before."""

    created_at: datetime | None = None


def keyed(row: Row, created_at: datetime | None) -> KeyedRow:
    """`row` with its created_at."""
    values = [getattr(row, name) for name in Row.__dataclass_fields__]
    return KeyedRow(*values, created_at=created_at)  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row with a column that cannot be read: it ends 'fail' with `reason`."""

    id: int
    attempts: int
    column: str
    reason: str
    template: str | None = None


def shown(value: object) -> str:
    """A value quoted for an error message: bounded, never raw bytes."""
    raw = getattr(value, "raw", None)
    if isinstance(raw, bytes):  # SQLite text that is not UTF-8 (db.dialects._BadText)
        value = raw
    if isinstance(value, bytes):
        text = repr(value[:VALUE_SHOWN])
    else:
        text = repr(value)
    return text if len(text) <= VALUE_SHOWN + 5 else text[:VALUE_SHOWN] + "...'"


class ColumnError(ValueError):
    pass


def _text(value: object, nullable: bool) -> str | None:
    if value is None:
        if nullable:
            return None
        raise ColumnError("is NULL")
    if getattr(value, "raw", None) is not None:
        raise ColumnError(f"is not valid UTF-8 text ({shown(value)})")
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ColumnError(f"is not valid UTF-8 text ({shown(value)})") from None
    if isinstance(value, str):
        return value
    return str(value)  # a number written into a text column reads as its text


def _int(value: object, nullable: bool) -> int | None:
    if value is None:
        if nullable:
            return None
        raise ColumnError("is NULL")
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ColumnError(f"{shown(value)} is not an integer")
    return value


def _ts(value: object, nullable: bool) -> datetime | None:
    if value is None:
        if nullable:
            return None
        raise ColumnError("is NULL")
    try:
        return parse_utc(value)
    except (ValueError, TypeError, OverflowError):
        raise ColumnError(f"{shown(value)} is not a time") from None


Decoder = Callable[[object, bool], object]
# (column, decoder, nullable), in the order the claim selects them
CLAIM_COLUMNS: tuple[tuple[str, Decoder, bool], ...] = (
    ("id", _int, False),
    ("attempts", _int, False),
    ("template", _text, False),
    ("app", _text, True),
    ("openid", _text, False),
    ("phone", _text, True),
    ("params", _text, False),
    ("page", _text, True),
    ("priority", _int, False),
    ("send_at", _ts, False),
    ("expire_at", _ts, True),
    ("dedup_key", _text, True),
    ("errcode", _int, True),
    ("error", _text, True),
    ("parent_id", _int, True),
    ("status", _text, False),
    ("claimed_by", _text, True),
    ("lease_until", _ts, True),
    ("updated_at", _ts, True),
    ("collapse_key", _text, True),
)
CLAIM_SELECT = ", ".join(name for name, _, _ in CLAIM_COLUMNS)
assert tuple(Row.__dataclass_fields__) == tuple(n for n, _, _ in CLAIM_COLUMNS)
COLLAPSE_KEY_AT = len(CLAIM_COLUMNS) - 1  # its place in a claimed row, undecoded


_TS_AT = tuple(i for i, (_, d, _) in enumerate(CLAIM_COLUMNS) if d is _ts)
_TEXT_AT = tuple(i for i, (_, d, n) in enumerate(CLAIM_COLUMNS) if d is _text and not n)
_NTEXT_AT = tuple(i for i, (_, d, n) in enumerate(CLAIM_COLUMNS) if d is _text and n)
_INT_AT = tuple(i for i, (_, d, n) in enumerate(CLAIM_COLUMNS) if d is _int and not n)
_NINT_AT = tuple(i for i, (_, d, n) in enumerate(CLAIM_COLUMNS) if d is _int and n)


_NONE = type(None)
# Type signatures (the type of each claimed value) known to pass the fast path's checks.
# A claim decodes every row it takes: one set lookup of the row's signature replaces a
# type check per column (and pays for the collapse_key column the claim now returns).
# Bounded: nullable columns make at most a few dozen signatures in practice.
_GOOD_TYPES: set[tuple[type, ...]] = set()
_GOOD_TYPES_MAX = 1024


def _fast_ok(types: tuple[type, ...]) -> bool:
    """Every value of the type its column should hold (timestamps are parsed after)."""
    ok = (all(types[i] is str for i in _TEXT_AT)
          and all(types[i] is _NONE or types[i] is str for i in _NTEXT_AT)
          and all(types[i] is int for i in _INT_AT)
          and all(types[i] is _NONE or types[i] is int for i in _NINT_AT))
    if ok and len(_GOOD_TYPES) < _GOOD_TYPES_MAX:
        _GOOD_TYPES.add(types)
    return ok


def decode_claimed(raw: Sequence[object],
                   times: dict[object, datetime] | None = None) -> Row | BadRow:
    """One row of CLAIM_SELECT -> Row, or BadRow naming the first unreadable column.

    The common case (every value of the type its column should hold) takes a fast path
    of plain type checks; anything else goes through the column decoders one by one.
    `times`: timestamps already parsed, shared by the rows of one claim (their
    lease_until and updated_at are the claim's own, and a bulk insert gives many the
    same send_at): each distinct value is parsed once."""
    values = list(raw)
    types = tuple(map(type, values))
    try:
        if types in _GOOD_TYPES or _fast_ok(types):
            for i in _TS_AT:
                v = values[i]
                if v is not None:
                    parsed = times.get(v) if times is not None else None
                    if parsed is None:
                        parsed = parse_utc(v)
                        if times is not None:
                            times[v] = parsed
                    values[i] = parsed
            if values[_TS_AT[0]] is not None:  # send_at is NOT NULL
                return Row(*values)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError):
        pass
    return _decode_slowly(raw)


def _decode_slowly(raw: Sequence[object]) -> Row | BadRow:
    values: dict[str, object] = {}
    for (name, decode, nullable), value in zip(CLAIM_COLUMNS, raw, strict=True):
        try:
            values[name] = decode(value, nullable)
        except ColumnError as exc:
            row_id = values.get("id")
            if not isinstance(row_id, int):
                raise  # the primary key is always an integer; anything else is a bug
            template = values.get("template")
            return BadRow(id=row_id, attempts=int(values.get("attempts") or 0),  # type: ignore[call-overload]
                          column=name, reason=f"{name} {exc}",
                          template=template if isinstance(template, str) else None)
    return Row(**values)  # type: ignore[arg-type]


def ts_or_none(value: object) -> datetime | None:
    """A timestamp for display; None when it cannot be read (readers never raise)."""
    try:
        return _ts(value, True)
    except ColumnError:
        return None


def text_or_shown(value: object) -> str | None:
    """Text for display; an unreadable value shown quoted rather than raising."""
    try:
        return _text(value, True)
    except ColumnError:
        return shown(value)


__all__ = ["CLAIM_COLUMNS", "CLAIM_SELECT", "BadRow", "KeyedRow", "Row", "decode_claimed",
           "keyed", "shown", "text_or_shown", "ts_or_none"]
