"""The token_refresh job: keep every app's token valid ahead of expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import clock
from runtime import Runtime


def run(rt: Runtime, *, now: Callable[[], datetime] = clock.now) -> dict[str, str]:
    """Refresh each app whose token expires within the margin; 'ok' or a reason per app."""
    return rt.tokens.refresh_all(now())
