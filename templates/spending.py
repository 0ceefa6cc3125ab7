"""Spending grants: the template keys that decide when (and whether) a row is worth a
grant, and the clock arithmetic of send windows.

A one-time subscribe grant allows one message, so Herald can spend them as a careful
developer would (docs/grants.md):

- `collapse_window: DURATION` (default 0s, at most 1h): a row with a collapse_key is not
  sent before it has waited that long since created_at, so a burst of updates becomes
  one message (the claim cancels the older ones: db/spending.py).
- `send_window: "HH:MM-HH:MM"` (may wrap midnight) in the zone of the top-level key
  `timezone`: a row due outside it waits for the next opening.
- `per_user: {max: N, per: DURATION}`, `cap_group: NAME`, `on_cap: wait | fail`: at most
  N successful sends of the template (or group) to one openid of one app in any window
  of that length.

This module only parses and computes; it knows no database and no template set, so
templates and jobs can both import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from config.values import duration_seconds, seconds_text

KEYS = ("collapse_window", "send_window", "per_user", "cap_group", "on_cap")
COLLAPSE_KEY_MAX = 128  # characters of msg_list.collapse_key
COLLAPSE_WINDOW_MAX = 3600.0  # seconds: longer would hold news back for too long
CAP_PER_MAX = 366 * 86400.0  # a cap's window: up to a year
CAP_MAX = 10_000
DEFAULT_TIMEZONE = "Asia/Shanghai"
CAPPED = "capped"  # the word fallback_on names, and the start of the row's error
_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")
_GROUP = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Minutes after local midnight: [start, end), wrapping midnight when end < start."""

    start: int
    end: int

    def __str__(self) -> str:
        return (f"{self.start // 60:02d}:{self.start % 60:02d}-"
                f"{self.end // 60:02d}:{self.end % 60:02d}")

    def is_open(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def next_opening(self, now: datetime, zone: tzinfo) -> datetime:
        """The next instant (aware UTC) the window opens, strictly after `now`'s minute;
        a wall-clock time a DST change skips opens at the same instant the zone's
        offset before the change gives it."""
        local = now.astimezone(zone)
        for days in range(0, 3):
            day = (local + timedelta(days=days)).date()
            opening = datetime(day.year, day.month, day.day, self.start // 60,
                               self.start % 60, tzinfo=zone)
            if opening > local:
                return opening.astimezone(UTC)
        raise AssertionError("a daily window opens within two days")


@dataclass(frozen=True, slots=True)
class Cap:
    max: int
    per: float  # seconds
    group: str  # the cap_group, or the template's own name
    on_cap: str = "wait"  # wait | fail

    def describe(self) -> str:
        return f"{self.max} per {seconds_text(self.per)}"


@dataclass(frozen=True, slots=True)
class Rules:
    """A template's spending keys (all off by default)."""

    collapse_window: float = 0.0
    send_window: SendWindow | None = None
    cap: Cap | None = None

    @property
    def any(self) -> bool:
        return bool(self.collapse_window or self.send_window or self.cap)


NO_RULES = Rules()


def parse_window(value: object) -> SendWindow:
    """"HH:MM-HH:MM" -> SendWindow; ValueError with the reason."""
    match = _WINDOW.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        hint = "" if isinstance(value, str) else "; quote it in YAML"
        raise ValueError(f"{value!r} is not a window (use \"HH:MM-HH:MM\" in 24-hour time, "
                         f"e.g. \"09:00-21:00\", or \"21:00-09:00\" across midnight{hint})")
    start = int(match.group(1)) * 60 + int(match.group(2))
    end = int(match.group(3)) * 60 + int(match.group(4))
    if start == end:
        raise ValueError(f"{value!r} opens and closes at the same minute (an always-open "
                         "template needs no send_window)")
    return SendWindow(start, end)


def zone(name: object) -> tzinfo:
    """An IANA zone by name; ValueError naming what is allowed."""
    # imported here: zoneinfo reads sysconfig at import, tens of milliseconds that every
    # process start (each CLI verb) would pay with no send window in sight
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name.strip() or len(name) > 64 or ".." in name \
            or name.startswith("/"):
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Asia/Shanghai, UTC)")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Asia/Shanghai, "
                         "Europe/Berlin, UTC)") from None


def parse(spec: Mapping[str, Any], name: str) -> tuple[Rules, list[tuple[str, str]]]:
    """A template's spending keys -> Rules, and (key, problem) pairs for `check`."""
    problems: list[tuple[str, str]] = []
    window = 0.0
    if "collapse_window" in spec:
        raw = spec["collapse_window"]
        try:
            window = 0.0 if raw in (0, "0s", "0") else duration_seconds(raw)
            if window > COLLAPSE_WINDOW_MAX:
                raise ValueError("must be at most 1h (rows would wait too long)")
        except ValueError as exc:
            problems.append(("collapse_window", f"{raw!r}: {exc}"))
            window = 0.0
    send_window = None
    if spec.get("send_window") is not None:
        try:
            send_window = parse_window(spec["send_window"])
        except ValueError as exc:
            problems.append(("send_window", str(exc)))
    cap = None
    per_user = spec.get("per_user")
    group = spec.get("cap_group")
    on_cap = spec.get("on_cap", "wait")
    if on_cap not in ("wait", "fail"):
        problems.append(("on_cap", f"{on_cap!r} is not allowed (wait or fail)"))
        on_cap = "wait"
    if group is not None and (not isinstance(group, str) or not _GROUP.fullmatch(group)):
        problems.append(("cap_group", f"{group!r} is not a group name (a lowercase letter, "
                                      "then up to 63 lowercase letters, digits or _)"))
        group = None
    if per_user is None:
        if "cap_group" in spec or "on_cap" in spec:
            which = "cap_group" if "cap_group" in spec else "on_cap"
            problems.append((which, "needs per_user: {max: N, per: DURATION}"))
    elif not isinstance(per_user, Mapping) or set(per_user) != {"max", "per"}:
        problems.append(("per_user", f"{per_user!r} must be a mapping with exactly max and "
                                     "per, e.g. {max: 2, per: 1d}"))
    else:
        most, per = per_user["max"], per_user["per"]
        ok = True
        if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= CAP_MAX:
            problems.append(("per_user", f"max {most!r} must be a whole number from 1 to "
                                         f"{CAP_MAX}"))
            ok = False
        try:
            seconds = duration_seconds(per)
            if seconds > CAP_PER_MAX:
                raise ValueError("must be at most 366d")
        except ValueError as exc:
            problems.append(("per_user", f"per {per!r}: {exc}"))
            ok = False
        if ok:
            cap = Cap(int(most), seconds, group or name, str(on_cap))
    return Rules(window, send_window, cap), problems


def check_groups(rules: Mapping[str, Rules],
                 at: Callable[..., str]) -> list[str]:
    """Templates sharing a cap_group must declare the same per_user (one cap), and a
    group may not be named like a template outside it (the counts would mix)."""
    problems: list[str] = []
    first: dict[str, tuple[str, Cap]] = {}
    for name, r in rules.items():
        if r.cap is None:
            continue
        seen = first.setdefault(r.cap.group, (name, r.cap))
        if (seen[1].max, seen[1].per) != (r.cap.max, r.cap.per):
            problems.append(f"{at(name, 'per_user')}: {name}.per_user: cap_group "
                            f"{r.cap.group!r} is {seen[1].describe()} in {seen[0]}; every "
                            "template of a group must give the same per_user")
        if r.cap.group != name and r.cap.group in rules and (
                rules[r.cap.group].cap is None or rules[r.cap.group].cap.group != r.cap.group):  # type: ignore[union-attr]
            problems.append(f"{at(name, 'cap_group')}: {name}.cap_group: {r.cap.group!r} is "
                            "the name of a template outside the group; pick another name")
    return problems


def group_members(rules: Mapping[str, tuple[Rules, str | None]], group: str) -> list[str]:
    """Every value a row's `template` column may hold for a template of `group`: the
    names and the template_ids (rules: name -> (Rules, template_id))."""
    out: set[str] = set()
    for name, (r, tid) in rules.items():
        if r.cap is not None and r.cap.group == group:
            out.add(name)
            if tid:
                out.add(tid)
    return sorted(out)


__all__ = ["CAPPED", "COLLAPSE_KEY_MAX", "COLLAPSE_WINDOW_MAX", "DEFAULT_TIMEZONE", "KEYS",
           "NO_RULES", "Cap", "Rules", "SendWindow", "check_groups", "group_members", "parse",
           "parse_window", "zone"]
