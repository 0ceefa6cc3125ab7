"""Injected failures of the send endpoints: what a real network and a real WeChat
produce (errcodes, canned answers, 5xx pages, HTML where JSON was expected, hangs,
resets, and an answer lost after the send was delivered), queued by inject() and taken
one by one by the sends they match.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sandbox.serving import Handler
from sandbox.wechat.core import ERRMSGS, Core

ENDPOINTS = frozenset({"subscribe", "uniform", "template"})
# lost_answer: the send is judged and accepted as usual, then no answer comes (the
# timeout after delivery that makes a retry a possible duplicate)
NAMED_FAULTS = frozenset({"non_json", "timeout", "reset", "lost_answer"})

Fault = str | int | dict[str, Any]


@dataclass(slots=True)
class _Pending:
    fault: Fault
    times: int
    openid: str | None
    endpoint: str | None = None  # subscribe | uniform | template; None: any send


def normalise(fault: Fault) -> Fault:
    """Validate a fault spec up front, so a typo fails in the test that wrote it. A dict
    is an answer body sent verbatim (a 40-digit msgid, an errcode past int32)."""
    if isinstance(fault, dict):
        return dict(fault)
    if isinstance(fault, bool):
        raise ValueError(f"unknown fault {fault!r}")
    if isinstance(fault, int):
        return fault
    if isinstance(fault, str):
        text = fault.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if text in NAMED_FAULTS:
            return text
        if text.startswith("http_") and text[5:].isdigit() and 400 <= int(text[5:]) <= 599:
            return text
    raise ValueError(
        f"unknown fault {fault!r}: expected an int errcode, 'http_500'/'http_502'/'http_503', "
        "'non_json', 'timeout', 'reset' or 'lost_answer'"
    )


class Faults:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._pending: list[_Pending] = []

    def inject(self, fault: Fault, *, times: int = 1, openid: str | None = None,
               endpoint: str | None = None) -> None:
        """Fail the next `times` sends (to `openid`, at `endpoint`: subscribe, uniform or
        template; None: any of them) with `fault` (an errcode, a named fault, or a canned
        answer as a dict)."""
        spec = normalise(fault)
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}")
        with self.core.lock:
            self._pending.append(_Pending(spec, times, openid, endpoint))

    def clear(self) -> None:
        """Drop injected faults that have not fired yet."""
        with self.core.lock:
            self._pending.clear()

    def take(self, touser: str | None, endpoint: str = "subscribe") -> Fault | None:
        """The fault this send meets, if one is pending for it."""
        with self.core.lock:
            if not self._pending:
                return None
            for index, pending in enumerate(self._pending):
                if pending.endpoint not in (None, endpoint):
                    continue
                if pending.openid is None or pending.openid == touser:
                    pending.times -= 1
                    if pending.times <= 0:
                        del self._pending[index]
                    return pending.fault
            return None

    def lose_answer(self, http: Handler) -> None:
        """Delivered, but the answer never comes: the client's read timeout fires."""
        http.hang(self.core.release)

    def answer(self, http: Handler, fault: Fault, touser: Any, template_id: Any, at: float,
               latency: float) -> None:
        """Answer a send with its fault instead of judging it (recorded as an attempt)."""
        core = self.core
        if fault == "timeout":
            core.record(touser, template_id, None, "timeout", at)
            http.hang(core.release)
            return
        if latency > 0:
            time.sleep(latency)
        if isinstance(fault, dict):
            code = fault.get("errcode")
            core.record(touser, template_id, code if isinstance(code, int) else None,
                        "answer", at)
            http.reply(200, json.dumps(fault).encode())
        elif isinstance(fault, int):
            core.record(touser, template_id, fault, str(fault), at)
            errmsg = ERRMSGS.get(fault, "injected error")
            http.reply_json({"errcode": fault, "errmsg": errmsg})
        else:
            core.record(touser, template_id, None, fault, at)
            http.transport_fault(fault)
