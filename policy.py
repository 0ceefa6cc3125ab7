"""What an answer means for its row: the delivery semantics in one place.

decide() turns (row, answer, now) into an Outcome that db/outcomes.py writes. It is a
pure function of its inputs (randomness comes in through `rng`), so the back-off
schedule and every Kind's action can be tested without a clock or a server. It sees
only the shared Kind of an answer, never which channel gave it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from channels.base import Answer, Kind
from config import RetryConfig
from db.outcomes import Event, GrantUse, Outcome

USER_BUSY_DELAY = 3.0  # 43108: the other send to this user finishes within seconds
TOKEN_WAIT = 60.0  # no token for the app: look again in a minute


def backoff_delay(attempts: int, retry: RetryConfig, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed try: base * factor^(attempts-1),
    capped at max, then spread by +-jitter so a burst of failures does not come back
    as a burst."""
    b = retry.backoff
    delay = min(b.max, b.base * (b.factor ** max(0, attempts - 1)))
    if b.jitter:
        delay *= 1 + (rng or random).uniform(-b.jitter, b.jitter)
    return max(0.0, delay)


def next_minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def quota_wait(kind: Kind, now: datetime, retry: RetryConfig) -> tuple[datetime, str] | None:
    """Until when a spent quota holds the app's rows, and why; None for other answers.
    Dispatch holds the app with it the moment a send thread sees the answer, and the
    row's own outcome (decide) waits the same."""
    if kind is Kind.QUOTA_DAY:
        return retry.daily_quota_reset.next_after(now), "deferred to the next quota day"
    if kind is Kind.QUOTA_MINUTE:
        return next_minute(now), "deferred to the next minute"
    return None


def decide(
    *,
    row_id: int,
    attempts: int,
    answer: Answer,
    now: datetime,
    retry: RetryConfig,
    rng: random.Random | None = None,
    event: Event | None = None,
    grant: GrantUse | None = None,
) -> Outcome:
    """The outcome of one send. `attempts` counts this try (as the claim set it);
    `event` and `grant` ride along into the outcome (its history line, its ledger
    change)."""
    kind = answer.kind

    def outcome(status: str, *, error: str | None = None, send_at: datetime | None = None,
                refund: bool = False) -> Outcome:
        return Outcome(row_id=row_id, claim_attempts=attempts, status=status,
                       errcode=answer.errcode, error=error, send_at=send_at,
                       msgid=answer.msgid if status == "success" else None,
                       refund_attempt=refund, event=event, grant=grant)

    if kind is Kind.SUCCESS:
        return outcome("success")
    if kind is Kind.PERMANENT:
        return outcome("fail", error=answer.reason)
    quota = quota_wait(kind, now, retry)
    if quota is not None:
        # not the row's fault: wait for the quota to come back, the attempt does not count
        until, why = quota
        return outcome("wait", send_at=until, refund=True, error=f"{why}: {answer.reason}")
    if kind is Kind.CREDENTIAL:
        return outcome("wait", send_at=now + timedelta(seconds=TOKEN_WAIT), refund=True,
                       error=answer.reason)
    # TRANSIENT, USER_BUSY, and TOKEN after its one immediate resend: they count
    if attempts >= retry.max_attempts:
        return outcome("fail", error=f"gave up after {attempts} attempts: {answer.reason}")
    delay = USER_BUSY_DELAY if kind is Kind.USER_BUSY else backoff_delay(attempts, retry, rng)
    return outcome("wait", send_at=now + timedelta(seconds=delay),
                   error=f"will retry: {answer.reason}")
