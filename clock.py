"""The one clock seam: every "what time is it" in Herald goes through now().

Tests control time with freezegun (which patches datetime.now) or by passing `now`
into the functions that take it; nothing else reads the wall clock for business
decisions.
"""

from datetime import UTC, datetime


def now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)
