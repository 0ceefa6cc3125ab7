"""The token_refresh job: keep every app's token valid ahead of expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import clock
from runtime import Runtime


class TokenRefreshFailed(RuntimeError):
    """Some apps have no fresh token. Raised after every app was tried, so the job run
    counts as failed (metrics, logs) and the operator sees which apps and why."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"app {a}: {r}" for a, r in problems.items()))


def run(rt: Runtime, *, now: Callable[[], datetime] = clock.now) -> dict[str, str]:
    """Refresh each app whose token expires within the margin; 'ok' per app, or raise."""
    result = rt.tokens.refresh_all(now())
    problems = {app: reason for app, reason in result.items() if reason != "ok"}
    if problems:
        raise TokenRefreshFailed(problems)
    return result
