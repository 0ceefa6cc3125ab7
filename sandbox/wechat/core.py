"""What every API of the WeChat sandbox shares: the one lock, the clock, the journal of
what arrived and what was accepted, the msgid counter, the mini program's pages, and
WeChat's error texts.

One lock for all of it, as WeChat's answers depend on each other (an accepted send may
expire every token; a held send waits on the same lock's condition). It is held only for
dict and list updates, never across the simulated latency.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_APPID = "wxsandbox000000001"
DEFAULT_SECRET = "sandbox-secret"

# Real msgids are above 2**53, where a float (or a JavaScript number) loses digits; starting
# there makes any client that parses them as floats fail visibly instead of in production.
FIRST_MSGID = 1988810812324364291

ERRMSGS: dict[int, str] = {
    -1: "system error",
    40165: "invalid weapp pagepath",
    43004: "require subscribe",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41030: "invalid page",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43101: "user refuse to accept the msg",
    43108: "concurrent send to one user is not allowed",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
}


def errcode(code: int) -> dict[str, Any]:
    """WeChat's answer for `code`, with its errmsg."""
    return {"errcode": code, "errmsg": ERRMSGS[code]}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send request that reached the handler, whatever became of it.

    errcode is None for faults that produce no errcode (HTTP status, non-JSON, timeout,
    reset); fault names the injected fault ('http_502', 'timeout', or the errcode as text,
    e.g. '-1'), or is None for a request the sandbox judged on its merits.
    """

    touser: str | None
    template_id: str | None
    errcode: int | None
    fault: str | None
    at: float


@dataclass(slots=True)
class Records:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    token_calls: Counter[str] = field(default_factory=Counter)
    by_openid: Counter[str] = field(default_factory=Counter)
    # (touser, template_id, canonical data JSON) -> times accepted; kept up to date on each
    # accept so /_sandbox/stats stays cheap while a benchmark polls it.
    seen: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    duplicates: int = 0
    violations: int = 0
    # what the official-account endpoints accepted, and template/send calls that a
    # client_msg_id seen in the last 10 minutes answered without delivering again
    uniform: list[dict[str, Any]] = field(default_factory=list)
    oa: list[dict[str, Any]] = field(default_factory=list)
    oa_repeats: list[dict[str, Any]] = field(default_factory=list)
    # every send request as it arrives, before any latency, fault or judgement: what a
    # crash test compares with (a request that arrived may have been delivered even if
    # the client never saw the answer)
    received: list[dict[str, Any]] = field(default_factory=list)


class Core:
    """The state every API reads; see the module's docstring for the lock."""

    def __init__(self, *, pages: set[str] | None, latency: float,
                 clock: Callable[[], float], release: threading.Event) -> None:
        # the mini program's pages (None: any page is valid)
        self.pages: set[str] | None = set(pages) if pages is not None else None
        # Read once per request without the lock: a float attribute swap is atomic, and a
        # request racing a change may use either value, which is all a caller can expect.
        self.latency = float(latency)
        self.clock = clock
        self.lock = threading.Lock()
        self.records = Records()
        # Set when the sandbox stops: wakes every request parked by a fault or a hold.
        self.release = release
        self._next_msgid = FIRST_MSGID

    def take_msgid_locked(self) -> int:
        msgid = self._next_msgid
        self._next_msgid += 1
        return msgid

    def page_unknown(self, page: str) -> bool:
        """A page (its query cut off) the mini program does not have."""
        return self.pages is not None and page.partition("?")[0] not in self.pages

    def record(self, touser: Any, template_id: Any, errcode: int | None, fault: str | None,
               at: float, *, violation: bool = False) -> None:
        """An attempt that was not accepted (or an injected fault)."""
        attempt = Attempt(
            touser if isinstance(touser, str) else None,
            template_id if isinstance(template_id, str) else None,
            errcode,
            fault,
            at,
        )
        with self.lock:
            self.records.attempts.append(attempt)
            if violation:
                self.records.violations += 1

    # --- the journal ---------------------------------------------------------------------

    @property
    def attempts(self) -> list[Attempt]:
        with self.lock:
            return list(self.records.attempts)

    def snapshot(self, name: str, *, deep: bool = False) -> list[dict[str, Any]]:
        """A copy of one of the journal's lists (accepted, received, ...). Not deep, its
        entries are shared, which is safe (they never change once appended) and cheap
        for a large dump; deep, the caller may change what it gets."""
        with self.lock:
            entries: list[dict[str, Any]] = list(getattr(self.records, name))
        return copy.deepcopy(entries) if deep else entries

    def stats(self) -> dict[str, Any]:
        """The body of GET /_sandbox/stats."""
        with self.lock:
            r = self.records
            return {
                "accepted": len(r.accepted),
                "attempts": len(r.attempts),
                "violations": r.violations,
                "token_calls": {
                    "stable": r.token_calls["stable"],
                    "legacy": r.token_calls["legacy"],
                },
                "by_openid": dict(r.by_openid),
                "duplicates": r.duplicates,
                "received": len(r.received),
                "received_by_openid": dict(Counter(
                    m["touser"] for m in r.received if m["touser"] is not None)),
            }

    def reset_records(self) -> None:
        """Forget what was recorded; tokens, faults, unsubscribes and msgids carry on."""
        with self.lock:
            self.records = Records()
