"""The grant hold: a row whose user has no subscribe grant left for its template.

grants.on_missing: `send` (the default) only observes; `hold` puts the row back to wait
(looked at again within HOLD_RECHECK, or at its expire_at), its attempt refunded, until
the user accepts again; `fail` ends it with `no grant` (which may fall back to another
channel: `no_grant` is in the default fallback_on). Which channels take grants, and
which templates need none per message, their channel module says (ChannelKind.grants).
After a send, grant_use() is what the answer says about the user's grant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.base import Answer, Kind
from db.decode import Row
from db.grants import blocked as grants_blocked
from db.outcomes import Event, GrantUse, Outcome
from templates import Template

NO_GRANT = "no grant"
NO_GRANT_CODE = "no_grant"  # the word fallback_on names it by
HOLD_RECHECK = timedelta(hours=1)  # a held row is looked at again at least this often


@dataclass(frozen=True, slots=True)
class Verdict:
    """A row that does not go on to send: held back to wait, or failed with a reason."""

    hold: Outcome | None = None
    fail: str | None = None


def verdicts(db: Any, policy: str, items: Sequence[tuple[str, str, Template, Row]],
             now: datetime) -> list[Verdict | None]:
    """For each (app, recipient, template, row): None to send it, or its Verdict.

    grants.on_missing hold|fail: a subscribe row whose user has no grant left for its
    template (balance 0, or rejected) is held in wait or failed; send (the default) only
    observes. Long-term templates need no grant per message."""
    keys = {(app, recipient, tpl.template_id or "")
            for app, recipient, tpl, _ in items if needs_grant(tpl)}
    blocked = grants_blocked(db, keys) if keys and policy != "send" else {}
    out: list[Verdict | None] = []
    for app, recipient, tpl, row in items:
        # only a row that spends a grant is looked up: a long-term row shares its key
        # with one-time rows of the same template and user in the batch
        why = blocked.get((app, recipient, tpl.template_id or "")) if needs_grant(tpl) else None
        if why is None:
            out.append(None)
        elif policy == "hold":
            until = now + HOLD_RECHECK
            if row.expire_at is not None:
                until = min(until, row.expire_at)
            out.append(Verdict(hold=Outcome(
                row_id=row.id, claim_attempts=row.attempts, status="wait",
                send_at=until, refund_attempt=True,
                error=f"held: {NO_GRANT} ({why}); sent when the user accepts again",
                event=Event("hold", channel=tpl.channel, detail=why))))
        else:
            out.append(Verdict(fail=f"{NO_GRANT}: {why}"))
    return out


def needs_grant(tpl: Template) -> bool:
    return tpl.kind.grants and tpl.kind.needs_grant(tpl.settings)


def grant_use(app: str, recipient: str, tpl: Template, answer: Answer) -> GrantUse | None:
    if not needs_grant(tpl) or not tpl.template_id:
        return None
    if answer.kind is Kind.SUCCESS:
        return GrantUse(app, recipient, tpl.template_id, used=True)
    if tpl.kind.grant_refused(answer):
        return GrantUse(app, recipient, tpl.template_id, used=False)
    return None


__all__ = ["HOLD_RECHECK", "NO_GRANT", "NO_GRANT_CODE", "Verdict", "grant_use", "needs_grant",
           "verdicts"]
