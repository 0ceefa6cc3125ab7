"""The check of the top-level `timezone` key: an IANA zone name that zoneinfo knows.

Zone data comes from the system (/usr/share/zoneinfo) or, on hosts without it, from the
tzdata package pinned in requirements.txt, so a name valid on one host is valid on all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .values import Check, Context, Invalid


@dataclass(frozen=True, slots=True)
class TimeZone(Check):
    kind: ClassVar[str] = "time zone"

    def limits(self) -> str:
        return "an IANA name such as Asia/Shanghai, Europe/Berlin or UTC"

    def parse(self, value: object, ctx: Context) -> str:
        # the one place zone names are read (templates.spending imports config)
        from templates import spending

        if value == spending.DEFAULT_TIMEZONE:
            return value  # shipped by tzdata (requirements.txt): no zone file to read now

        try:
            spending.zone(value)
        except ValueError:
            hint = "" if isinstance(value, str) else " (quote it in YAML)"
            raise Invalid("is not an IANA time zone name (e.g. Asia/Shanghai, Europe/Berlin, "
                          f"UTC){hint}") from None
        return str(value).strip()


__all__ = ["TimeZone"]
