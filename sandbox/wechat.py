"""A local stand-in for WeChat's token and subscribe-message endpoints, on 127.0.0.1.

Herald's tests, its `demo` verb and its benchmarks all talk to this server instead of
api.weixin.qq.com. It answers the way WeChat does (HTTP 200 with an errcode in JSON, the
same checks in the same order, msgids above 2**53), records what it accepted so a test can
assert on deliveries, and lets the caller inject the failures a real network and a real
WeChat produce: errcodes, 5xx pages, HTML where JSON was expected, hangs and resets.

It is built for a benchmark of ~1,000 sends a second over 64 keep-alive connections on two
cores, so the per-request path is kept short: one thread per connection (not per request),
one response write per answer, no logging, and the shared lock is held only for dict and
list updates, never across the simulated latency.

Run it on its own with `python -m sandbox.wechat` from the project folder; see main().
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

import keywords
from sandbox.pusher import Pusher, PushRecord
from sandbox.serving import TrackingServer

__all__ = [
    "DEFAULT_APPID",
    "DEFAULT_SECRET",
    "FIRST_MSGID",
    "Attempt",
    "Sandbox",
    "main",
]

DEFAULT_APPID = "wxsandbox000000001"
DEFAULT_SECRET = "sandbox-secret"

# Real msgids are above 2**53, where a float (or a JavaScript number) loses digits; starting
# there makes any client that parses them as floats fail visibly instead of in production.
FIRST_MSGID = 1988810812324364291

# How long a legacy (/cgi-bin/token) token keeps working after a newer one was issued, and
# how close to expiry a stable token must be before a non-force call replaces it.
LEGACY_GRACE = 300.0
STABLE_RENEW_WITHIN = 300.0

# template/send's client_msg_id: "对于同一个openid + client_msg_id, 只发送一条消息,10分钟有效"
CLIENT_MSG_WINDOW = 600.0
ENDPOINTS = frozenset({"subscribe", "uniform", "template"})
# What a subscribe_msg_sent_event reports for an openid told to fail delivery when the
# test names nothing: WeChat documents only ErrorCode 0 = success (notes/events.md).
DELIVERY_FAILURE = (10001, "fail: system error")

# Upper bound for a 'timeout' fault: long enough for any client timeout a test would use,
# short enough that a forgotten sandbox does not pin a thread forever.
TIMEOUT_HOLD = 60.0

VALID_STATES = frozenset({"developer", "trial", "formal"})
VALID_LANGS = frozenset({"zh_CN", "en_US", "zh_HK", "zh_TW"})

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

# lost_answer: the send is judged and accepted as usual, then no answer comes (the
# timeout after delivery that makes a retry a possible duplicate)
_NAMED_FAULTS = frozenset({"non_json", "timeout", "reset", "lost_answer"})
_HTTP_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# struct linger {int l_onoff; int l_linger;}: on with a zero timeout makes close() send RST.
_LINGER_RESET = struct.pack("ii", 1, 0)


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
class _Token:
    appid: str
    kind: str  # 'stable' or 'legacy'
    expires_at: float
    # When the token stops being "the latest": force_refresh sets it to now, a newer legacy
    # token to now + LEGACY_GRACE. Past it the answer is 40001, not 42001.
    superseded_at: float | None = None
    # Set by expire_tokens(): expired regardless of the clock, which a test may have frozen.
    expired: bool = False


@dataclass(slots=True)
class _Fault:
    fault: str | int | dict[str, Any]
    times: int
    openid: str | None
    endpoint: str | None = None  # subscribe | uniform | template; None: any send


@dataclass(slots=True)
class _Records:
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


def _normalise_fault(fault: str | int | dict[str, Any]) -> str | int | dict[str, Any]:
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
        if text in _NAMED_FAULTS:
            return text
        if text.startswith("http_") and text[5:].isdigit() and 400 <= int(text[5:]) <= 599:
            return text
    raise ValueError(
        f"unknown fault {fault!r}: expected an int errcode, 'http_500'/'http_502'/'http_503', "
        "'non_json', 'timeout', 'reset' or 'lost_answer'"
    )


def _json_bytes(obj: Any) -> bytes:
    # ensure_ascii=False keeps Chinese values readable in /_sandbox/accepted; compact
    # separators because the benchmark pays for every byte.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Sandbox:
    """A WeChat look-alike HTTP server. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        apps: dict[str, str] | None = None,
        templates: dict[str, list[str]] | None = None,
        pages: set[str] | None = None,
        token_ttl: float = 7200.0,
        latency: float = 0.0,
        token_latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.apps: dict[str, str] = (
            dict(apps) if apps is not None else {DEFAULT_APPID: DEFAULT_SECRET}
        )
        self.templates: dict[str, list[str]] | None = (
            {tid: list(keys) for tid, keys in templates.items()} if templates is not None else None
        )
        self.pages: set[str] | None = set(pages) if pages is not None else None
        # what GET /wxaapi/newtmpl/gettemplate lists: tid -> title, type, labels, enums
        self.template_info: dict[str, dict[str, Any]] = {}
        self.token_ttl = float(token_ttl)
        # Read once per request without the lock: a float attribute swap is atomic, and a
        # request racing a change may use either value, which is all a caller can expect.
        self.latency = float(latency)
        self.token_latency = float(token_latency)
        self.host = host
        self.port = port
        self.clock = clock

        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._stable: dict[str, str] = {}  # appid -> current stable token
        self._legacy: dict[str, str] = {}  # appid -> newest legacy token
        self._unsubscribed: set[str] = set()
        self._inflight: set[str] = set()
        self._faults: list[_Fault] = []
        self._next_msgid = FIRST_MSGID
        self._expire_after: int | None = None
        self._records = _Records()
        # Set by stop(): wakes every request parked by a 'timeout' fault.
        self._release = threading.Event()
        # The official-account side: which appids are accounts (their tokens send
        # template/send), which account is bound to which mini program (uniform_send), the
        # accounts' templates (None: any id, any keys), and what users did.
        self.official_accounts: set[str] = set()
        self._bound: set[tuple[str, str]] = set()  # (mini program appid, account appid)
        self.oa_templates: dict[str, list[str]] | None = None
        self._not_following: set[str] = set()
        self._blocked: set[str] = set()
        self._fail_delivery: dict[str, tuple[int, str]] = {}
        # (account appid, touser, client_msg_id) -> (msgid, when first accepted)
        self._client_msgs: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._pushers: dict[str, Pusher] = {}  # appid -> its message push
        # hold(): sends to these openids wait at the door until release()
        self._held: set[str] = set()
        self._gate = threading.Condition(self._lock)
        # token_answer(): canned answers of the token endpoints, used in order
        self._token_answers: list[dict[str, Any]] = []

        self._server: _Server | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self._release.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self.port = server.server_address[1]
        server.serve_in_background(f"sandbox:{self.port}")
        return self

    def stop(self) -> None:
        with self._lock:
            pushers, self._pushers = list(self._pushers.values()), {}
        for pusher in pushers:
            pusher.stop()
        server, self._server = self._server, None
        if server is None:
            return
        self._release.set()
        with self._lock:
            self._gate.notify_all()
        server.stop_serving()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        return f"http://{self.host}:{self.port}"

    # --- records ---------------------------------------------------------------------

    @property
    def accepted(self) -> list[dict[str, Any]]:
        with self._lock:
            records = list(self._records.accepted)
        return copy.deepcopy(records)

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._records.attempts)

    @property
    def token_calls(self) -> dict[str, int]:
        with self._lock:
            calls = self._records.token_calls
            return {"stable": calls["stable"], "legacy": calls["legacy"]}

    def accepted_count(self, openid: str | None = None) -> int:
        with self._lock:
            if openid is None:
                return len(self._records.accepted)
            return self._records.by_openid[openid]

    def concurrency_violations(self) -> int:
        """43108 answers the sandbox gave on its own judgement (injected 43108s excluded).

        Injected ones are left out because this counter exists to catch Herald sending to
        one user concurrently; a test that injects 43108 to exercise retries is not that.
        """
        with self._lock:
            return self._records.violations

    def stats(self) -> dict[str, Any]:
        """The body of GET /_sandbox/stats."""
        with self._lock:
            r = self._records
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
        with self._lock:
            self._records = _Records()

    # --- control ---------------------------------------------------------------------

    def add_template(self, template_id: str, keywords: dict[str, str], *, title: str = "",
                     long_term: bool = False, enums: dict[str, list[str]] | None = None,
                     example: str = "") -> None:
        """Make a template known (sends to it are judged by its keywords) and listed by
        the template-list endpoint: keywords maps each data key to its label (商品名称)."""
        with self._lock:
            if self.templates is None:
                self.templates = {}
            self.templates[template_id] = list(keywords)
            self.template_info[template_id] = {
                "title": title or template_id, "type": 3 if long_term else 2,
                "labels": dict(keywords), "enums": dict(enums or {}), "example": example}

    def remove_template(self, template_id: str) -> None:
        with self._lock:
            if self.templates is not None:
                self.templates.pop(template_id, None)
            self.template_info.pop(template_id, None)

    def template_list(self) -> list[dict[str, Any]]:
        """The `data` of GET /wxaapi/newtmpl/gettemplate, as WeChat shapes it."""
        with self._lock:
            known = dict(self.templates or {})
            info = {k: dict(v) for k, v in self.template_info.items()}
        out = []
        for tid, keys in known.items():
            meta = info.get(tid, {})
            labels = meta.get("labels") or {k: k for k in keys}
            content = "\n".join(f"{labels.get(k, k)}:{{{{{k}.DATA}}}}" for k in keys)
            out.append({
                "priTmplId": tid, "title": meta.get("title", tid), "content": content,
                "example": meta.get("example", ""), "type": meta.get("type", 2),
                "keywordEnumValueList": [{"keywordCode": f"{k}.DATA", "enumValueList": list(v)}
                                         for k, v in meta.get("enums", {}).items()],
            })
        return out

    def unsubscribe(self, openid: str) -> None:
        with self._lock:
            self._unsubscribed.add(openid)

    def expire_tokens(self) -> None:
        with self._lock:
            self._expire_all_locked()

    def expire_tokens_after(self, n: int) -> None:
        with self._lock:
            if n <= 0:
                self._expire_after = None
                self._expire_all_locked()
            else:
                self._expire_after = n

    def inject(self, fault: str | int | dict[str, Any], *, times: int = 1,
               openid: str | None = None, endpoint: str | None = None) -> None:
        """Fail the next `times` sends (to `openid`, at `endpoint`: subscribe, uniform or
        template; None: any of them) with `fault` (an errcode, a named fault, or a canned
        answer as a dict)."""
        spec = _normalise_fault(fault)
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(sorted(ENDPOINTS))}")
        with self._lock:
            self._faults.append(_Fault(spec, times, openid, endpoint))

    def clear_faults(self) -> None:
        """Drop injected faults that have not fired yet."""
        with self._lock:
            self._faults.clear()
            self._token_answers.clear()

    def hold(self, openid: str) -> None:
        """Sends to `openid` arrive (and are recorded as received) but wait there, before
        any latency or judgement, until release(): a test can act while WeChat holds the
        request."""
        with self._lock:
            self._held.add(openid)

    def release(self, openid: str | None = None) -> None:
        """Let held sends (to `openid`, or all) go on."""
        with self._lock:
            if openid is None:
                self._held.clear()
            else:
                self._held.discard(openid)
            self._gate.notify_all()

    def token_answer(self, payload: dict[str, Any], *, times: int = 1) -> None:
        """The next `times` token calls (stable or legacy) answer `payload` verbatim
        (an errcode, an expires_in of 0, NaN or 1e12 ...), then normal service resumes."""
        with self._lock:
            self._token_answers.extend(dict(payload) for _ in range(times))

    def _canned_token(self) -> dict[str, Any] | None:
        with self._lock:
            return self._token_answers.pop(0) if self._token_answers else None

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every send request that arrived, in order: touser, template_id, data, at."""
        with self._lock:
            return copy.deepcopy(self._records.received)

    def _arrive(self, msg: Any, at: float) -> None:
        touser = msg.get("touser") if isinstance(msg, dict) else None
        record = {"touser": touser if isinstance(touser, str) else None,
                  "template_id": msg.get("template_id") if isinstance(msg, dict) else None,
                  "data": msg.get("data") if isinstance(msg, dict) else None, "at": at}
        with self._lock:
            self._records.received.append(record)
            while (isinstance(touser, str) and touser in self._held
                   and not self._release.is_set()):
                self._gate.wait(0.5)

    # --- official accounts (template/send, uniform_send) ------------------------------

    def add_official_account(self, appid: str, secret: str, *, bound_to: str | None = None
                             ) -> None:
        """An official account whose tokens send template/send, optionally bound to the
        mini program `bound_to` (so that mini program's uniform_send may name it)."""
        with self._lock:
            self.apps[appid] = secret
            self.official_accounts.add(appid)
            if bound_to is not None:
                self._bound.add((bound_to, appid))

    def bind(self, mini_appid: str, oa_appid: str) -> None:
        with self._lock:
            self._bound.add((mini_appid, oa_appid))

    def add_oa_template(self, template_id: str, keys: list[str] | tuple[str, ...]) -> None:
        """An official-account template: sends to it must carry exactly these data keys.
        Once one is added, unknown template ids answer 40037."""
        with self._lock:
            if self.oa_templates is None:
                self.oa_templates = {}
            self.oa_templates[template_id] = list(keys)

    def unfollow(self, openid: str) -> None:
        """The user does not follow the account: template/send and uniform_send 43004."""
        with self._lock:
            self._not_following.add(openid)

    def block(self, openid: str) -> None:
        """The user refuses the account's messages: TEMPLATESENDJOBFINISH says
        failed:user block."""
        with self._lock:
            self._blocked.add(openid)

    def fail_delivery(self, openid: str, error_code: int = DELIVERY_FAILURE[0],
                      error_status: str = DELIVERY_FAILURE[1]) -> None:
        """Subscribe sends to this openid are accepted, but their sent event reports this
        failure."""
        with self._lock:
            self._fail_delivery[openid] = (int(error_code), str(error_status))

    @property
    def uniform_accepted(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._records.uniform)

    @property
    def oa_accepted(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._records.oa)

    @property
    def oa_repeats(self) -> list[dict[str, Any]]:
        """template/send calls answered from an earlier send's client_msg_id."""
        with self._lock:
            return copy.deepcopy(self._records.oa_repeats)

    # --- message push -----------------------------------------------------------------

    def push_to(self, appid: str, url: str, *, token: str, aes_key: str | None = None,
                fmt: str = "xml", mode: str = "plain", **options: Any) -> Pusher:
        """Push `appid`'s events to `url` as its console would be set up (see
        sandbox/pusher.py for the options); replaces an earlier set-up."""
        pusher = Pusher(url, token=token, appid=appid, aes_key=aes_key, fmt=fmt, mode=mode,
                        clock=self.clock, **options).start()
        with self._lock:
            old = self._pushers.get(appid)
            self._pushers[appid] = pusher
        if old is not None:
            old.stop()
        return pusher

    def pusher(self, appid: str) -> Pusher | None:
        with self._lock:
            return self._pushers.get(appid)

    def _pusher_or_raise(self, appid: str) -> Pusher:
        found = self.pusher(appid)
        if found is None:
            raise ValueError(f"no push set up for app {appid!r} (push_to first)")
        return found

    def popup(self, appid: str, openid: str, results: dict[str, str], scene: str = "0"
              ) -> PushRecord:
        """The user answered a subscribe popup: template_id -> accept | reject."""
        return self._pusher_or_raise(appid).popup(openid, results, scene)

    def change(self, appid: str, openid: str, results: dict[str, str]) -> PushRecord:
        """The user changed a subscription in the settings (reject)."""
        return self._pusher_or_raise(appid).change(openid, results)

    def pushes(self) -> list[dict[str, Any]]:
        """Every push of every app, as GET /_sandbox/pushes shows them."""
        with self._lock:
            pushers = list(self._pushers.items())
        out = []
        for appid, pusher in pushers:
            for r in pusher.records:
                out.append({"appid": appid, "seq": r.seq, "event": r.event, "openid": r.openid,
                            "msgid": r.msgid, "plaintext": r.plaintext.decode("utf-8"),
                            "delivered": r.delivered, "gave_up": r.gave_up,
                            "answers": [{"status": a.status, "body": a.body, "error": a.error}
                                        for a in r.answers]})
        return out

    # --- tokens (called by the handler) -----------------------------------------------

    def _expire_all_locked(self) -> None:
        for token in self._tokens.values():
            token.expired = True

    def _mint_locked(self, appid: str, kind: str, now: float) -> str:
        # 'sbx' marks sandbox tokens in logs; the random part makes them unguessable enough
        # that a test cannot pass by sending a token it invented.
        value = f"sbx_{kind[0]}_{os.urandom(24).hex()}"
        self._tokens[value] = _Token(appid, kind, now + self.token_ttl)
        return value

    def _check_app(self, grant_type: object, appid: object, secret: object) -> int:
        if grant_type != "client_credential":
            return 40002
        if not isinstance(appid, str) or appid not in self.apps:
            return 40013
        if secret != self.apps[appid]:
            return 40125
        return 0

    def _stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        appid = body.get("appid")
        err = self._check_app(body.get("grant_type"), appid, body.get("secret"))
        with self._lock:
            self._records.token_calls["stable"] += 1
            if err:
                return {"errcode": err, "errmsg": ERRMSGS[err]}
            assert isinstance(appid, str)
            now = self.clock()
            current = self._tokens.get(self._stable.get(appid, ""))
            if body.get("force_refresh") is True:
                if current is not None:
                    current.superseded_at = now
                current = None
            elif current is not None and (
                current.expired
                or current.superseded_at is not None
                or current.expires_at - now < STABLE_RENEW_WITHIN
            ):
                # The old token is left alone: it keeps working until its own expiry.
                current = None
            if current is None:
                value = self._mint_locked(appid, "stable", now)
                self._stable[appid] = value
                current = self._tokens[value]
            else:
                value = self._stable[appid]
            return {"access_token": value, "expires_in": int(current.expires_at - now)}

    def _legacy_token(self, query: dict[str, str]) -> dict[str, Any]:
        appid = query.get("appid")
        err = self._check_app(query.get("grant_type"), appid, query.get("secret"))
        with self._lock:
            self._records.token_calls["legacy"] += 1
            if err:
                return {"errcode": err, "errmsg": ERRMSGS[err]}
            assert isinstance(appid, str)
            now = self.clock()
            previous = self._tokens.get(self._legacy.get(appid, ""))
            if previous is not None:
                grace_end = now + LEGACY_GRACE
                if previous.superseded_at is None or previous.superseded_at > grace_end:
                    previous.superseded_at = grace_end
            value = self._mint_locked(appid, "legacy", now)
            self._legacy[appid] = value
            return {"access_token": value, "expires_in": int(self.token_ttl)}

    # --- sends (called by the handler) ------------------------------------------------

    def _take_fault(self, touser: str | None, endpoint: str = "subscribe"
                    ) -> str | int | dict[str, Any] | None:
        with self._lock:
            if not self._faults:
                return None
            for index, pending in enumerate(self._faults):
                if pending.endpoint not in (None, endpoint):
                    continue
                if pending.openid is None or pending.openid == touser:
                    pending.times -= 1
                    if pending.times <= 0:
                        del self._faults[index]
                    return pending.fault
            return None

    def _judge(self, token: str | None, msg: Any) -> tuple[int, str]:
        """Everything WeChat checks before sending, in its order. (0, 'ok') if it passes."""
        now = self.clock()
        with self._lock:
            info = self._tokens.get(token) if token else None
            if info is None or (info.superseded_at is not None and now >= info.superseded_at):
                return 40001, ERRMSGS[40001]
            if info.expired or now >= info.expires_at:
                return 42001, ERRMSGS[42001]
            if not isinstance(msg, dict):
                return 47001, ERRMSGS[47001]
            touser = msg.get("touser")
            if not isinstance(touser, str) or not touser:
                return 40003, ERRMSGS[40003]
            if touser in self._unsubscribed:
                return 43101, ERRMSGS[43101]
        # The rest reads only configuration fixed at construction, so no lock.
        template_id = msg.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            return 40037, ERRMSGS[40037]
        template_keys = None
        if self.templates is not None:
            template_keys = self.templates.get(template_id)
            if template_keys is None:
                return 40037, ERRMSGS[40037]
        page = msg.get("page")
        if page is not None and page != "":
            if not isinstance(page, str):
                return 41030, ERRMSGS[41030]
            if self.pages is not None and page.partition("?")[0] not in self.pages:
                return 41030, ERRMSGS[41030]
        state = msg.get("miniprogram_state")
        if state is not None and state not in VALID_STATES:
            return 47003, "argument invalid! miniprogram_state invalid"
        lang = msg.get("lang")
        if lang is not None and lang not in VALID_LANGS:
            return 47003, "argument invalid! lang invalid"
        data = msg.get("data")
        if not isinstance(data, dict) or not data:
            return 47003, "argument invalid! data invalid"
        if template_keys is not None:
            missing = [key for key in template_keys if key not in data]
            extra = [key for key in data if key not in template_keys]
            if missing or extra:
                return 47003, f"argument invalid! data.{(missing or extra)[0]}.value invalid"
        enums = self.template_info.get(template_id, {}).get("enums", {})
        for key, item in data.items():
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, str):
                return 47003, f"argument invalid! data.{key}.value invalid"
            try:
                # truncate=False: WeChat refuses an over-long value, it never shortens one.
                choices = tuple(enums[key]) if key in enums else None
                keywords.check_value(key, value, truncate=False, choices=choices)
            except keywords.KeywordError:
                return 47003, f"argument invalid! data.{key}.value invalid"
        return 0, "ok"

    def _token_app(self, token: str | None) -> tuple[int, str | None]:
        """(0, appid) for a live token, else (40001 or 42001, None), as _judge decides."""
        now = self.clock()
        with self._lock:
            info = self._tokens.get(token) if token else None
            if info is None or (info.superseded_at is not None and now >= info.superseded_at):
                return 40001, None
            if info.expired or now >= info.expires_at:
                return 42001, None
            return 0, info.appid

    def _judge_oa_common(self, template_id: Any, url: Any, data: Any) -> tuple[int, str]:
        """The checks template/send and uniform_send's mp_template_msg share."""
        if not isinstance(template_id, str) or not template_id:
            return 40037, ERRMSGS[40037]
        keys = None
        if self.oa_templates is not None:
            keys = self.oa_templates.get(template_id)
            if keys is None:
                return 40037, ERRMSGS[40037]
        if url is not None and (not isinstance(url, str)
                                or not url.startswith(("http://", "https://"))):
            return 47003, "argument invalid! url invalid"
        if not isinstance(data, dict) or not data:
            return 47003, "argument invalid! data invalid"
        for key, item in data.items():
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                return 47003, f"argument invalid! data.{key}.value invalid"
        if keys is not None and sorted(data) != sorted(keys):
            wrong = [k for k in keys if k not in data] or [k for k in data if k not in keys]
            return 47003, f"argument invalid! data.{wrong[0]}.value invalid"
        return 0, "ok"

    def _judge_uniform(self, token: str | None, msg: Any) -> tuple[int, str, str | None]:
        """uniform_send's checks in WeChat's order: (errcode, errmsg, the mini program)."""
        err, appid = self._token_app(token)
        if err:
            return err, ERRMSGS[err], None
        if appid in self.official_accounts:
            return 48001, ERRMSGS[48001], appid
        if not isinstance(msg, dict) or not isinstance(msg.get("mp_template_msg"), dict):
            return 47001, ERRMSGS[47001], appid
        touser = msg.get("touser")
        if not isinstance(touser, str) or not touser:
            return 40003, ERRMSGS[40003], appid
        mp = msg["mp_template_msg"]
        mini = mp.get("miniprogram")
        with self._lock:
            bound = (appid, mp.get("appid")) in self._bound
            following = touser not in self._not_following
        if not bound or not isinstance(mini, dict) or mini.get("appid") != appid:
            return 40013, ERRMSGS[40013], appid
        page = mini.get("pagepath")
        if page not in (None, "") and (not isinstance(page, str) or (
                self.pages is not None and page.partition("?")[0] not in self.pages)):
            return 41030, ERRMSGS[41030], appid
        if not following:
            return 43004, ERRMSGS[43004], appid
        err, errmsg = self._judge_oa_common(mp.get("template_id"), mp.get("url"), mp.get("data"))
        return err, errmsg, appid

    def _judge_template(self, token: str | None, msg: Any) -> tuple[int, str, str | None]:
        """template/send's checks: (errcode, errmsg, the official account)."""
        err, appid = self._token_app(token)
        if err:
            return err, ERRMSGS[err], None
        if appid not in self.official_accounts:
            return 48001, ERRMSGS[48001], appid
        if not isinstance(msg, dict):
            return 47001, ERRMSGS[47001], appid
        touser = msg.get("touser")
        if not isinstance(touser, str) or not touser:
            return 40003, ERRMSGS[40003], appid
        with self._lock:
            following = touser not in self._not_following
            linked = {mini for mini, oa in self._bound if oa == appid}
        if not following:
            return 43004, ERRMSGS[43004], appid
        mini = msg.get("miniprogram")
        if mini is not None:
            if not isinstance(mini, dict) or mini.get("appid") not in linked:
                return 40013, ERRMSGS[40013], appid
            page = mini.get("pagepath")
            if page not in (None, "") and (not isinstance(page, str) or (
                    self.pages is not None and page.partition("?")[0] not in self.pages)):
                return 40165, ERRMSGS[40165], appid
        cmid = msg.get("client_msg_id")
        if cmid is not None and (not isinstance(cmid, str) or not cmid or len(cmid) > 64):
            return 47003, "argument invalid! client_msg_id invalid", appid
        err, errmsg = self._judge_oa_common(msg.get("template_id"), msg.get("url"),
                                            msg.get("data"))
        return err, errmsg, appid

    def _accept_uniform(self, appid: str, msg: dict[str, Any], at: float) -> None:
        with self._lock:
            self._records.uniform.append({**copy.deepcopy(msg), "from_appid": appid})
            mp = msg["mp_template_msg"]
            self._records.attempts.append(Attempt(msg["touser"], mp.get("template_id"), 0,
                                                  None, at))

    def _accept_template(self, appid: str, msg: dict[str, Any], at: float) -> tuple[int, bool]:
        """(msgid, repeated): a client_msg_id seen in the last 10 minutes gets the first
        send's msgid back and delivers nothing."""
        touser: str = msg["touser"]
        cmid = msg.get("client_msg_id")
        now = self.clock()
        with self._lock:
            self._records.attempts.append(Attempt(touser, msg.get("template_id"), 0, None, at))
            key = (appid, touser, cmid) if isinstance(cmid, str) else None
            seen = self._client_msgs.get(key) if key is not None else None
            if seen is not None and now - seen[1] < CLIENT_MSG_WINDOW:
                self._records.oa_repeats.append({"touser": touser, "client_msg_id": cmid,
                                                 "msgid": str(seen[0])})
                return seen[0], True
            msgid = self._next_msgid
            self._next_msgid += 1
            self._records.oa.append({**copy.deepcopy(msg), "from_appid": appid,
                                     "msgid": str(msgid)})
            if key is not None:
                self._client_msgs[key] = (msgid, now)
            pusher = self._pushers.get(appid)
            status = "failed:user block" if touser in self._blocked else "success"
        if pusher is not None:
            pusher.template_job(touser, str(msgid), status)
        return msgid, False

    def _pushed_sent_event(self, appid: str | None, msg: dict[str, Any], msgid: int) -> None:
        """After an accepted subscribe send: its subscribe_msg_sent_event, if the app has a
        push set up."""
        with self._lock:
            pusher = self._pushers.get(appid) if appid else None
            code, status = self._fail_delivery.get(msg["touser"], (0, "success"))
        if pusher is not None:
            pusher.sent(msg["touser"], msg["template_id"], str(msgid), code, status)

    def _enter(self, touser: str) -> bool:
        """Mark touser in flight; False if another send to it already is (a 43108)."""
        with self._lock:
            if touser in self._inflight:
                return False
            self._inflight.add(touser)
            return True

    def _leave(self, touser: str) -> None:
        with self._lock:
            self._inflight.discard(touser)

    def _record(
        self,
        touser: Any,
        template_id: Any,
        errcode: int | None,
        fault: str | None,
        at: float,
        *,
        violation: bool = False,
    ) -> None:
        attempt = Attempt(
            touser if isinstance(touser, str) else None,
            template_id if isinstance(template_id, str) else None,
            errcode,
            fault,
            at,
        )
        with self._lock:
            self._records.attempts.append(attempt)
            if violation:
                self._records.violations += 1

    def _accept(self, msg: dict[str, Any], at: float) -> int:
        touser: str = msg["touser"]
        template_id: str = msg["template_id"]
        data = msg["data"]
        # Canonical text so that key order does not hide a duplicate.
        fingerprint = json.dumps(data, sort_keys=True, ensure_ascii=False)
        with self._lock:
            msgid = self._next_msgid
            self._next_msgid += 1
            r = self._records
            r.accepted.append(
                {
                    "touser": touser,
                    "template_id": template_id,
                    "page": msg.get("page"),
                    "data": data,
                    "miniprogram_state": msg.get("miniprogram_state"),
                    "lang": msg.get("lang"),
                    "msgid": str(msgid),
                }
            )
            r.attempts.append(Attempt(touser, template_id, 0, None, at))
            r.by_openid[touser] += 1
            key = (touser, template_id, fingerprint)
            r.seen[key] += 1
            if r.seen[key] > 1:
                r.duplicates += 1
            if self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after <= 0:
                    self._expire_after = None
                    self._expire_all_locked()
        return msgid


class _Server(TrackingServer):
    sandbox: Sandbox


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "herald-sandbox"
    # One write per response already; TCP_NODELAY also stops Nagle from holding that write
    # behind the client's delayed ACK on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: at 1,000 requests a second stderr logging would cost more than the work.
        pass

    # --- plumbing --------------------------------------------------------------------

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        size = int(length)
        if size < 0:
            # read(-1) would wait for EOF, i.e. hang a keep-alive connection forever.
            raise ValueError(f"negative Content-Length {size}")
        return self.rfile.read(size)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        reason = "OK" if status == 200 else _HTTP_REASONS.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)

    def _reply_json(self, obj: Any, status: int = 200) -> None:
        self._reply(status, _json_bytes(obj))

    def _split(self) -> tuple[str, dict[str, str]]:
        path, _, query = self.path.partition("?")
        if not query:
            return path, {}
        return path, {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}

    # --- dispatch --------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._body() if method == "POST" else b""
        except ValueError:
            self.close_connection = True
            self._reply_json({"error": "bad Content-Length"}, 400)
            return
        path, query = self._split()
        sandbox = self.server.sandbox
        if path == "/cgi-bin/message/subscribe/send":
            if method != "POST":
                self._reply_json({"errcode": 43002, "errmsg": ERRMSGS[43002]})
            else:
                self._send(sandbox, query, body)
        elif path in ("/cgi-bin/message/wxopen/template/uniform_send",
                      "/cgi-bin/message/template/send"):
            if method != "POST":
                self._reply_json({"errcode": 43002, "errmsg": ERRMSGS[43002]})
            else:
                self._oa_send(sandbox, "uniform" if "uniform" in path else "template", query,
                              body)
        elif path == "/cgi-bin/stable_token":
            if method != "POST":
                self._reply_json({"errcode": 43002, "errmsg": ERRMSGS[43002]})
                return
            if sandbox.token_latency > 0:
                time.sleep(sandbox.token_latency)
            parsed = _loads(body)
            canned = sandbox._canned_token()
            if canned is not None:
                with sandbox._lock:
                    sandbox._records.token_calls["stable"] += 1
                self._reply(200, json.dumps(canned).encode())  # NaN stays NaN
            elif not isinstance(parsed, dict):
                self._reply_json({"errcode": 47001, "errmsg": ERRMSGS[47001]})
            else:
                self._reply_json(sandbox._stable_token(parsed))
        elif path == "/cgi-bin/token":
            if method != "GET":
                self._reply_json({"errcode": 43001, "errmsg": ERRMSGS[43001]})
                return
            if sandbox.token_latency > 0:
                time.sleep(sandbox.token_latency)
            canned = sandbox._canned_token()
            if canned is not None:
                with sandbox._lock:
                    sandbox._records.token_calls["legacy"] += 1
                self._reply(200, json.dumps(canned).encode())
            else:
                self._reply_json(sandbox._legacy_token(query))
        elif path == "/wxaapi/newtmpl/gettemplate":
            if method != "GET":
                self._reply_json({"errcode": 43001, "errmsg": ERRMSGS[43001]})
                return
            self._template_list(sandbox, query)
        elif path.startswith("/_sandbox/"):
            self._control(sandbox, method, path[len("/_sandbox/") :], body)
        else:
            self._reply_json({"error": f"no such endpoint {path}"}, 404)

    # --- the template list -----------------------------------------------------------

    def _template_list(self, sandbox: Sandbox, query: dict[str, str]) -> None:
        now = sandbox.clock()
        token = query.get("access_token")
        with sandbox._lock:
            info = sandbox._tokens.get(token) if token else None
            stale = info is None or (info.superseded_at is not None and now >= info.superseded_at)
            expired = info is not None and (info.expired or now >= info.expires_at)
        if stale:
            self._reply_json({"errcode": 40001, "errmsg": ERRMSGS[40001]})
        elif expired:
            self._reply_json({"errcode": 42001, "errmsg": ERRMSGS[42001]})
        else:
            self._reply_json({"errcode": 0, "errmsg": "ok", "data": sandbox.template_list()})

    # --- the send endpoint -----------------------------------------------------------

    def _send(self, sandbox: Sandbox, query: dict[str, str], body: bytes) -> None:
        at = time.monotonic()
        msg = _loads(body)
        sandbox._arrive(msg, at)
        touser = msg.get("touser") if isinstance(msg, dict) else None
        template_id = msg.get("template_id") if isinstance(msg, dict) else None
        fault = sandbox._take_fault(touser if isinstance(touser, str) else None)
        latency = sandbox.latency
        lose = fault == "lost_answer"
        if fault is not None and not lose:
            self._fault(sandbox, fault, touser, template_id, at, latency)
            return
        errcode, errmsg = sandbox._judge(query.get("access_token"), msg)
        if errcode:
            if latency > 0:
                time.sleep(latency)
            sandbox._record(touser, template_id, errcode, None, at)
            self._reply_json({"errcode": errcode, "errmsg": errmsg})
            return
        assert isinstance(msg, dict) and isinstance(touser, str)  # _judge checked both
        # Only a send that would otherwise succeed takes the user's slot, and it keeps it
        # through the latency, which is what makes an overlapping second send a 43108.
        if not sandbox._enter(touser):
            if latency > 0:
                time.sleep(latency)
            sandbox._record(touser, template_id, 43108, None, at, violation=True)
            self._reply_json({"errcode": 43108, "errmsg": ERRMSGS[43108]})
            return
        # the app, for its push; taken now: the accept below may expire every token
        appid = sandbox._token_app(query.get("access_token"))[1] if sandbox._pushers else None
        try:
            if latency > 0:
                time.sleep(latency)
            msgid = sandbox._accept(msg, at)
        finally:
            sandbox._leave(touser)
        if appid is not None:
            sandbox._pushed_sent_event(appid, msg, msgid)
        if lose:
            self._lose_answer(sandbox)
            return
        # json.dumps of a Python int writes every digit; a float would round past 2**53.
        self._reply(200, b'{"errcode":0,"errmsg":"ok","msgid":%d}' % msgid)

    def _oa_send(self, sandbox: Sandbox, endpoint: str, query: dict[str, str],
                 body: bytes) -> None:
        """uniform_send and template/send: judged like subscribe/send (token first)."""
        at = time.monotonic()
        msg = _loads(body)
        touser = msg.get("touser") if isinstance(msg, dict) else None
        inner = msg.get("mp_template_msg") if isinstance(msg, dict) else None
        source = inner if endpoint == "uniform" and isinstance(inner, dict) else msg
        template_id = source.get("template_id") if isinstance(source, dict) else None
        fault = sandbox._take_fault(touser if isinstance(touser, str) else None, endpoint)
        latency = sandbox.latency
        lose = fault == "lost_answer"
        if fault is not None and not lose:
            self._fault(sandbox, fault, touser, template_id, at, latency)
            return
        judge = sandbox._judge_uniform if endpoint == "uniform" else sandbox._judge_template
        errcode, errmsg, appid = judge(query.get("access_token"), msg)
        if latency > 0:
            time.sleep(latency)
        if errcode:
            sandbox._record(touser, template_id, errcode, None, at)
            self._reply_json({"errcode": errcode, "errmsg": errmsg})
            return
        assert isinstance(msg, dict) and appid is not None
        if endpoint == "uniform":
            sandbox._accept_uniform(appid, msg, at)
            reply = b'{"errcode":0,"errmsg":"ok"}'
        else:
            msgid, _ = sandbox._accept_template(appid, msg, at)
            reply = b'{"errcode":0,"errmsg":"ok","msgid":%d}' % msgid
        if lose:
            self._lose_answer(sandbox)
            return
        self._reply(200, reply)

    def _lose_answer(self, sandbox: Sandbox) -> None:
        """Delivered, but the answer never comes: the client's read timeout fires."""
        sandbox._release.wait(TIMEOUT_HOLD)
        self.close_connection = True

    def _fault(
        self,
        sandbox: Sandbox,
        fault: str | int | dict[str, Any],
        touser: Any,
        template_id: Any,
        at: float,
        latency: float,
    ) -> None:
        if fault == "timeout":
            sandbox._record(touser, template_id, None, "timeout", at)
            sandbox._release.wait(TIMEOUT_HOLD)
            # No answer at all: the client's read timeout is what should fire.
            self.close_connection = True
            return
        if latency > 0:
            time.sleep(latency)
        if isinstance(fault, dict):
            code = fault.get("errcode")
            sandbox._record(touser, template_id, code if isinstance(code, int) else None,
                            "answer", at)
            self._reply(200, json.dumps(fault).encode())
        elif isinstance(fault, int):
            sandbox._record(touser, template_id, fault, str(fault), at)
            errmsg = ERRMSGS.get(fault, "injected error")
            self._reply_json({"errcode": fault, "errmsg": errmsg})
        elif fault == "reset":
            sandbox._record(touser, template_id, None, "reset", at)
            self.close_connection = True
            conn = self.connection
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            # rfile holds a reference to the socket; close both so the close happens now
            # (as an RST, thanks to the linger setting), not after the handler returns.
            self.rfile.close()
            conn.close()
        elif fault == "non_json":
            sandbox._record(touser, template_id, None, "non_json", at)
            self._reply(200, b"<html>busy</html>", "text/html")
        else:
            assert isinstance(fault, str)
            status = int(fault[5:])
            sandbox._record(touser, template_id, None, fault, at)
            reason = _HTTP_REASONS.get(status, "Error")
            page = (
                f"<html><head><title>{status} {reason}</title></head>"
                f"<body><center><h1>{status} {reason}</h1></center></body></html>"
            )
            self._reply(status, page.encode("ascii"), "text/html")

    # --- control API -----------------------------------------------------------------

    def _control(self, sandbox: Sandbox, method: str, name: str, body: bytes) -> None:
        if method == "GET" and name == "stats":
            self._reply_json(sandbox.stats())
            return
        if method == "GET" and name == "pushes":
            self._reply_json(sandbox.pushes())
            return
        if method == "GET" and name == "channels":
            self._reply_json({"uniform": sandbox.uniform_accepted, "oa": sandbox.oa_accepted,
                              "oa_repeats": sandbox.oa_repeats})
            return
        if method == "GET" and name == "received":
            with sandbox._lock:
                arrived = list(sandbox._records.received)
            self._reply_json(arrived)
            return
        if method == "GET" and name == "accepted":
            # Records are never mutated once appended, so serialising outside the lock
            # is safe and keeps a large dump from stalling sends.
            with sandbox._lock:
                records = list(sandbox._records.accepted)
            self._reply_json(records)
            return
        if method != "POST":
            self._reply_json({"error": f"no such control GET {name}"}, 404)
            return
        args = _loads(body) if body else {}
        if not isinstance(args, dict):
            self._reply_json({"error": "body must be a JSON object"}, 400)
            return
        try:
            if name == "config":
                if "latency" in args:
                    sandbox.latency = float(args["latency"])
                if "token_latency" in args:
                    sandbox.token_latency = float(args["token_latency"])
            elif name == "inject":
                sandbox.inject(
                    args["fault"], times=int(args.get("times", 1)), openid=args.get("openid"),
                    endpoint=args.get("endpoint"),
                )
            elif name == "expire_tokens":
                sandbox.expire_tokens()
            elif name == "expire_tokens_after":
                sandbox.expire_tokens_after(int(args["n"]))
            elif name == "unsubscribe":
                sandbox.unsubscribe(str(args["openid"]))
            elif name == "reset":
                sandbox.reset_records()
            elif name == "clear_faults":
                sandbox.clear_faults()
            elif name == "official_account":
                sandbox.add_official_account(str(args["appid"]), str(args["secret"]),
                                             bound_to=args.get("bound_to"))
            elif name == "oa_template":
                sandbox.add_oa_template(str(args["template_id"]), list(args["keys"]))
            elif name in ("unfollow", "block"):
                getattr(sandbox, name)(str(args["openid"]))
            elif name == "fail_delivery":
                sandbox.fail_delivery(str(args["openid"]),
                                      int(args.get("error_code", DELIVERY_FAILURE[0])),
                                      str(args.get("error_status", DELIVERY_FAILURE[1])))
            elif name == "push_config":
                sandbox.push_to(str(args["appid"]), str(args["url"]), token=str(args["token"]),
                                aes_key=args.get("aes_key"), fmt=str(args.get("format", "xml")),
                                mode=str(args.get("mode", "plain")))
            elif name in ("popup", "change"):
                results = args["results"]
                if not isinstance(results, dict):
                    raise TypeError("results maps template ids to accept or reject")
                if name == "popup":
                    sandbox.popup(str(args["appid"]), str(args["openid"]), results,
                                  str(args.get("scene", "0")))
                else:
                    sandbox.change(str(args["appid"]), str(args["openid"]), results)
            elif name == "hold":
                sandbox.hold(str(args["openid"]))
            elif name == "release":
                sandbox.release(args.get("openid"))
            elif name == "token_answer":
                sandbox.token_answer(dict(args["payload"]), times=int(args.get("times", 1)))
            else:
                self._reply_json({"error": f"no such control POST {name}"}, 404)
                return
        except (KeyError, TypeError, ValueError) as exc:
            self._reply_json({"error": f"{type(exc).__name__}: {exc}"}, 400)
            return
        self._reply_json({"ok": True})


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


# --- command line --------------------------------------------------------------------


def _parse_app(text: str) -> tuple[str, str]:
    appid, sep, secret = text.partition(":")
    if not sep or not appid or not secret:
        raise argparse.ArgumentTypeError(f"expected APPID:SECRET, got {text!r}")
    return appid, secret


def _write_port_file(path: str, port: int) -> None:
    # Write then rename, so a reader polling for the file never sees it half written.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def _add_templates_file(sandbox: Sandbox, path: str) -> None:
    """Know every subscribe template of a templates.yaml (its data keys as keywords)."""
    from templates import load_templates

    for tpl in load_templates(path).templates.values():
        if tpl.channel == "subscribe" and tpl.template_id:
            sandbox.add_template(tpl.template_id, {i.key: i.key for i in tpl.items},
                                 title=tpl.name, long_term=tpl.long_term,
                                 enums={k: list(v) for k, v in tpl.enums.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.wechat",
        description="A local WeChat token and subscribe-message server for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per send")
    parser.add_argument("--token-latency", type=float, default=0.0, help="seconds per token call")
    parser.add_argument("--token-ttl", type=float, default=7200.0)
    parser.add_argument(
        "--app",
        type=_parse_app,
        action="append",
        metavar="APPID:SECRET",
        help=f"may repeat; default {DEFAULT_APPID}:{DEFAULT_SECRET}",
    )
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--templates", metavar="FILE",
                        help="a templates.yaml whose subscribe templates the sandbox knows and "
                             "lists (for check --remote and templates pull by hand)")
    parser.add_argument("--push", metavar="URL",
                        help="push events to this receiver like WeChat (e.g. "
                             "http://127.0.0.1:8080/wechat/push); needs --push-token")
    parser.add_argument("--push-token", help="the app's push Token (as in config.yaml)")
    parser.add_argument("--push-aes-key", help="its EncodingAESKey: safe mode (else plain)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sandbox = Sandbox(
        apps=dict(args.app) if args.app else None,
        token_ttl=args.token_ttl,
        latency=args.latency,
        token_latency=args.token_latency,
        host=args.host,
        port=args.port,
    ).start()
    if args.templates:
        _add_templates_file(sandbox, args.templates)
    if args.push:
        if not args.push_token:
            parser.error("--push needs --push-token")
        for appid in sandbox.apps:
            sandbox.push_to(appid, args.push, token=args.push_token,
                            aes_key=args.push_aes_key,
                            mode="safe" if args.push_aes_key else "plain")
    try:
        if args.port_file:
            _write_port_file(args.port_file, sandbox.port)
        print(f"sandbox listening on {sandbox.url}", flush=True)
        # A timed wait, so the main thread gets back to the interpreter loop regularly and
        # the signal handler runs promptly.
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
